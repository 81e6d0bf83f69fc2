"""Graph pass: turn ``nn.MultiheadAttention`` calls into explicit projections around an SDPA call.

Dynamo keeps ``torch.nn.functional.multi_head_attention_forward`` as one opaque call, so the
analysis (which only knows ``scaled_dot_product_attention``, see ``analysis/sdpa.py``) finds no
attention site in models built on torch's own attention module. This pass writes each call it
can handle out as the computation it performs, on a copy of the graph, so that the analysis
sees an ordinary attention block.

Before (a ``batch_first`` module: the transposes are the module's, outside the call)::

    query = x.transpose(1, 0)                                            # (L, B, E)
    mha   = multi_head_attention_forward(query, query, query, E, H, in_proj_weight, in_proj_bias,
                                         None, None, False, 0.0, out_proj_weight, out_proj_bias,
                                         training=False, key_padding_mask=kpm, need_weights=False,
                                         attn_mask=None, average_attn_weights=True, is_causal=False)
    out   = mha[0]                                                       # (L, B, E)
    y     = out.transpose(1, 0)

After (self-attention: one packed projection; ``kpm`` a float (B, S) key padding mask)::

    query = x.transpose(1, 0)                                            # (L, B, E)
    x_b   = query.transpose(0, 1)                                        # (B, L, E)
    qkv   = linear(x_b, in_proj_weight, in_proj_bias)                    # (B, L, 3E)
    chunk = qkv.chunk(3, -1); q = chunk[0]; k = chunk[1]; v = chunk[2]   # (B, L, E) each
    q_h   = q.view(B, -1, H, d).transpose(1, 2)                          # (B, H, L, d); k_h, v_h alike
    mask  = kpm.view(B, 1, 1, S)                                         # additive, over the key axis
    attn  = scaled_dot_product_attention(q_h, k_h, v_h, attn_mask=mask, dropout_p=0.0, is_causal=False)
    o     = attn.transpose(1, 2).reshape(B, -1, E)
    proj  = linear(o, out_proj_weight, out_proj_bias)                    # (B, L, E)
    out   = proj.transpose(0, 1)                                         # (L, B, E), replaces mha[0]
    y     = out.transpose(1, 0)

Other inputs: when ``key is value`` (but not ``query``) the key/value projection is one packed
linear over the last two thirds of ``in_proj_weight``; otherwise each input gets its third of it
(``in_proj_weight.chunk(3)``), or its own weight with ``use_separate_proj_weight=True``
(``kdim``/``vdim`` modules). A ``(L, S)`` ``attn_mask`` is passed as is (SDPA broadcasts it), a
``(B*H, L, S)`` one is viewed as ``(B, H, L, S)``; boolean masks (True = masked out, torch's MHA
convention) become additive ``-inf`` masks exactly as ``F.multi_head_attention_forward`` does,
and a key padding mask is added to the attention mask. ``is_causal=True`` without a key padding
mask becomes SDPA's ``is_causal`` (the analysis then leaves the site alone, as it does any
causal site); with one, the mask alone is used, as torch does.

The call's result is the tuple ``(output, None)``; its users are the ``getitem`` nodes that
index it, and ``[0]`` is rewired to the new output (an unused ``[1]`` is dropped).

Left alone, with a reason in :attr:`DecomposeResult.left_alone`: ``need_weights=True`` (the
attention weights are an output: they are full-length by definition), ``bias_k``/``bias_v``
and ``add_zero_attn`` (extra key tokens that are not video), ``static_k``/``static_v``,
dropout in training mode, unbatched inputs, symbolic or unknown shapes, arguments that are not
constants where they must be, masks of other dtypes or shapes, and results used other than by
indexing. Every new node gets ``meta["example_value"]`` (computed on fake tensors, in the fake
mode of the graph's example values) and the call's ``nn_module_stack``, so that the analysis can
walk and name the new site. The pass never raises on a graph it does not understand.
"""

from __future__ import annotations

import inspect
import logging
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from asymrnr_compile.analysis.fx_nodes import module_path, node_value
from asymrnr_compile.analysis.sdpa import SDPA_TARGETS
from asymrnr_compile.passes.graph_utils import copy_graph_module
from asymrnr_compile.reasons import DYNAMIC_FALSE_FIX, Reason

logger = logging.getLogger("asymrnr_compile.passes")

#: Targets of an ``nn.MultiheadAttention`` call in a Dynamo graph.
MHA_TARGETS: tuple[Any, ...] = (F.multi_head_attention_forward,)

#: The SDPA target of the new calls: the Dynamo-graph one of ``analysis.sdpa.SDPA_TARGETS``.
SDPA_TARGET = SDPA_TARGETS[0]

#: Meta keys of the call copied onto every new node (names and blocks of the new site).
_COPIED_META = ("nn_module_stack", "stack_trace", "source_fn_stack")

_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


@dataclass
class DecomposeResult:
    """A copy of the graph with the handled MHA calls written out.

    Attributes:
        gm: the new graph module (the input graph is left untouched; when nothing was
            decomposed it is still a copy).
        decomposed: how many ``multi_head_attention_forward`` calls were replaced.
        left_alone: one ``"<module path or node>: <reason>"`` per call that was not.
    """

    gm: torch.fx.GraphModule
    decomposed: int = 0
    left_alone: list[str] = field(default_factory=list)


class _LeftAlone(Exception):
    """Why one call cannot be decomposed (the message is the reason; ``fix``: what the user can
    change, or None)."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


def is_multi_head_attention(node: torch.fx.Node) -> bool:
    """Whether ``node`` calls ``F.multi_head_attention_forward``."""
    return node.op == "call_function" and any(node.target is t for t in MHA_TARGETS)


def mha_arguments(node: torch.fx.Node) -> dict[str, Any]:
    """Every parameter of ``F.multi_head_attention_forward`` for ``node``, by name (defaults filled in).

    Raises:
        TypeError: the arguments do not fit the signature.
    """
    bound = _SIGNATURE.bind(*node.args, **node.kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def decompose_multi_head_attention(gm: torch.fx.GraphModule) -> DecomposeResult:
    """Replace each ``multi_head_attention_forward`` call of ``gm`` it can handle by in-projection,
    ``scaled_dot_product_attention`` and out-projection (see the module docstring).

    Args:
        gm: a Dynamo graph (``node.meta["example_value"]`` on every node); not modified.

    Returns:
        The rewritten copy, the number of calls replaced and the reasons for the others.
    """
    new_gm, _ = copy_graph_module(gm)
    new_gm.meta.update(gm.meta)  # Dynamo's graph-level metadata (parameter names, compile id)
    result = DecomposeResult(new_gm)
    calls = [node for node in new_gm.graph.nodes if is_multi_head_attention(node)]
    for node in calls:
        where = module_path(node) or node.name
        try:
            _decompose(new_gm.graph, node, new_gm)
        except _LeftAlone as exc:
            result.left_alone.append(Reason(f"{where}: {exc}", fix=exc.fix))
            logger.info("multi_head_attention_forward at %s left alone: %s", where, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - never break the user's model
            result.left_alone.append(Reason(f"{where}: decomposition failed: {type(exc).__name__}: {exc}"))
            logger.warning("decomposing multi_head_attention_forward at %s failed: %r", where, exc)
            continue
        result.decomposed += 1
    if result.decomposed:
        new_gm.graph.lint()
        new_gm.recompile()
    return result


# ---------------------------------------------------------------------------------------------
# checks


def _constant(args: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    value = args[name]
    if not isinstance(value, kinds):
        raise _LeftAlone(f"{name} is not a constant ({type(value).__name__})")
    return value


def _static_shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, torch.Tensor):
        raise _LeftAlone(f"no example value for {what} (unknown shape)")
    if not all(is_concrete_int(s) for s in value.shape):
        raise _LeftAlone(f"the shape of {what} is symbolic; compile with dynamic=False", fix=DYNAMIC_FALSE_FIX)
    return tuple(int(s) for s in value.shape)


def _tensor_or_none(args: dict[str, Any], name: str) -> torch.fx.Node | None:
    value = args[name]
    if value is None:
        return None
    if not isinstance(value, torch.fx.Node):
        raise _LeftAlone(f"{name} is not a graph tensor ({type(value).__name__})")
    return value


def _check_unsupported(args: dict[str, Any]) -> None:
    """Raise :class:`_LeftAlone` for what the decomposition does not cover."""
    if _constant(args, "need_weights", (bool,)):
        raise _LeftAlone("need_weights=True: the attention weights are an output, tokens cannot be reduced",
                         fix="call nn.MultiheadAttention with need_weights=False")
    if args["bias_k"] is not None or args["bias_v"] is not None:
        raise _LeftAlone("bias_k/bias_v: a learned key/value token is appended to the keys")
    if _constant(args, "add_zero_attn", (bool,)):
        raise _LeftAlone("add_zero_attn=True: a zero key/value token is appended to the keys")
    if args["static_k"] is not None or args["static_v"] is not None:
        raise _LeftAlone("static_k/static_v: keys/values are given instead of projected")
    training = _constant(args, "training", (bool,))
    dropout_p = _constant(args, "dropout_p", (int, float))
    if training and dropout_p > 0:
        raise _LeftAlone(f"training with dropout_p={dropout_p}: attention dropout is random")
    _constant(args, "is_causal", (bool,))
    _constant(args, "use_separate_proj_weight", (bool,))


# ---------------------------------------------------------------------------------------------
# building


class _Builder:
    """Inserts nodes before the call, each with its fake example value and the call's meta."""

    def __init__(self, graph: torch.fx.Graph, call: torch.fx.Node, gm: torch.fx.GraphModule,
                 fake_mode: Any, grad: bool) -> None:
        self.graph = graph
        self.call = call
        self.gm = gm
        self.fake_mode = fake_mode
        self.grad = grad
        self.meta = {k: call.meta[k] for k in _COPIED_META if k in call.meta}
        self.created: list[torch.fx.Node] = []

    def value(self, x: Any) -> Any:
        """The fake example value of an argument (nodes resolved, real tensors made fake)."""
        if isinstance(x, torch.fx.Node):
            value = node_value(x, self.gm)
            if value is None:
                raise _LeftAlone(f"{x.name} has no example value (unknown shape)")
            return self.fake(value)
        if isinstance(x, (list, tuple)):
            return type(x)(self.value(v) for v in x)
        return x

    def fake(self, value: Any) -> Any:
        from torch._subclasses.fake_tensor import FakeTensor

        if isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor):
            return self.fake_mode.from_tensor(value, static_shapes=True)
        return value

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        grad = torch.enable_grad() if self.grad else torch.no_grad()
        with self.fake_mode, grad:
            return fn(*self.value(args), **{k: self.value(v) for k, v in kwargs.items()})

    def function(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.fx.Node:
        value = self._run(target, args, kwargs)
        with self.graph.inserting_before(self.call):
            node = self.graph.call_function(target, args, kwargs)
        return self._tag(node, value)

    def method(self, name: str, *args: Any, **kwargs: Any) -> torch.fx.Node:
        value = self._run(lambda obj, *a, **k: getattr(obj, name)(*a, **k), args, kwargs)
        with self.graph.inserting_before(self.call):
            node = self.graph.call_method(name, args, kwargs)
        return self._tag(node, value)

    def _tag(self, node: torch.fx.Node, value: Any) -> torch.fx.Node:
        self.created.append(node)
        node.meta.update(self.meta)
        node.meta["example_value"] = value
        return node

    def discard(self) -> None:
        """Erase every node inserted so far (the call is left as it was)."""
        for node in reversed(self.created):
            self.graph.erase_node(node)
        self.created.clear()

    def pieces(self, x: torch.fx.Node, n: int, dim: int) -> list[torch.fx.Node]:
        """``x.chunk(n, dim)`` and its ``n`` items."""
        chunks = self.method("chunk", x, n, dim)
        return [self.function(operator.getitem, chunks, k) for k in range(n)]


def _fake_mode(gm: torch.fx.GraphModule) -> Any:
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    for node in gm.graph.nodes:
        value = node_value(node, gm)
        if isinstance(value, FakeTensor):
            return value.fake_mode
    return FakeTensorMode()


def _float_mask(b: _Builder, mask: torch.fx.Node, dtype: torch.dtype, name: str) -> torch.fx.Node:
    """``mask`` as an additive float mask of ``dtype`` (bool: True -> -inf, torch's MHA convention)."""
    value = b.value(mask)
    if value.dtype == torch.bool:
        zeros = b.function(torch.zeros_like, mask, dtype=dtype)
        return b.method("masked_fill", zeros, mask, -math.inf)
    if value.dtype != dtype:
        raise _LeftAlone(f"{name} has dtype {value.dtype}, the query {dtype}")
    return mask


def _attention_mask(b: _Builder, args: dict[str, Any], sizes: tuple[int, int, int, int],
                    dtype: torch.dtype) -> tuple[torch.fx.Node | None, bool]:
    """The SDPA ``attn_mask`` and ``is_causal`` of the call (see the module docstring)."""
    batch, heads, tgt_len, src_len = sizes
    attn_mask = _tensor_or_none(args, "attn_mask")
    padding = _tensor_or_none(args, "key_padding_mask")
    if args["is_causal"] and padding is None:
        if attn_mask is None:
            raise _LeftAlone("is_causal=True without attn_mask (torch raises)")
        return None, True
    mask = None
    if attn_mask is not None:
        shape = _static_shape(b.value(attn_mask), "attn_mask")
        if shape == (tgt_len, src_len):
            mask = _float_mask(b, attn_mask, dtype, "attn_mask")
        elif shape == (batch * heads, tgt_len, src_len):
            mask = b.method("view", _float_mask(b, attn_mask, dtype, "attn_mask"), batch, heads, tgt_len, src_len)
        else:
            raise _LeftAlone(f"attn_mask of shape {shape} (expected {(tgt_len, src_len)} "
                             f"or {(batch * heads, tgt_len, src_len)})")
    if padding is not None:
        shape = _static_shape(b.value(padding), "key_padding_mask")
        if shape != (batch, src_len):
            raise _LeftAlone(f"key_padding_mask of shape {shape} (expected {(batch, src_len)})")
        padding = b.method("view", _float_mask(b, padding, dtype, "key_padding_mask"), batch, 1, 1, src_len)
        mask = padding if mask is None else b.function(operator.add, mask, padding)
    return mask, False


def _in_projection(b: _Builder, args: dict[str, Any], query: torch.fx.Node, key: torch.fx.Node,
                   value: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node, torch.fx.Node]:
    """q, k, v ``(B, L, E)`` from the batch-first inputs (see the module docstring)."""
    bias = _tensor_or_none(args, "in_proj_bias")
    if args["use_separate_proj_weight"]:
        weights = [_tensor_or_none(args, name) for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
        if any(w is None for w in weights):
            raise _LeftAlone("use_separate_proj_weight=True without q/k/v_proj_weight")
        biases = b.pieces(bias, 3, 0) if bias is not None else [None] * 3
        return tuple(  # type: ignore[return-value]
            b.function(F.linear, x, w, bb) for x, w, bb in zip((query, key, value), weights, biases)
        )
    weight = _tensor_or_none(args, "in_proj_weight")
    if weight is None:
        raise _LeftAlone("in_proj_weight is None")
    if query is key and key is value:
        q, k, v = b.pieces(b.function(F.linear, query, weight, bias), 3, -1)
        return q, k, v
    weights = b.pieces(weight, 3, 0)
    biases = b.pieces(bias, 3, 0) if bias is not None else [None] * 3
    q = b.function(F.linear, query, weights[0], biases[0])
    if key is value:
        w_kv = b.function(torch.cat, [weights[1], weights[2]])
        b_kv = b.function(torch.cat, [biases[1], biases[2]]) if bias is not None else None
        k, v = b.pieces(b.function(F.linear, key, w_kv, b_kv), 2, -1)
        return q, k, v
    k = b.function(F.linear, key, weights[1], biases[1])
    v = b.function(F.linear, value, weights[2], biases[2])
    return q, k, v


def _decompose(graph: torch.fx.Graph, call: torch.fx.Node, gm: torch.fx.GraphModule) -> None:
    try:
        args = mha_arguments(call)
    except TypeError as exc:
        raise _LeftAlone(f"arguments do not fit multi_head_attention_forward: {exc}") from None
    _check_unsupported(args)
    getters = _result_getters(call)

    query, key, value = (_tensor_or_none(args, name) for name in ("query", "key", "value"))
    if query is None or key is None or value is None:
        raise _LeftAlone("query, key or value is not a graph tensor")
    out_value = node_value(call, gm)
    grad = isinstance(out_value, (tuple, list)) and isinstance(out_value[0], torch.Tensor) and (
        out_value[0].requires_grad)
    b = _Builder(graph, call, gm, _fake_mode(gm), grad)
    try:
        output = _build(b, args, query, key, value)
    except BaseException:
        b.discard()
        raise
    for getter, index in getters:
        if index == 0:
            getter.replace_all_uses_with(output)
        graph.erase_node(getter)
    graph.erase_node(call)


def _build(b: _Builder, args: dict[str, Any], query: torch.fx.Node, key: torch.fx.Node,
           value: torch.fx.Node) -> torch.fx.Node:
    """Insert the decomposition of one call; returns the node of its output ``(L, B, E)``."""
    q_val = b.value(query)
    q_shape = _static_shape(q_val, "query")
    k_shape = _static_shape(b.value(key), "key")
    v_shape = _static_shape(b.value(value), "value")
    if len(q_shape) != 3:
        raise _LeftAlone(f"unbatched input (query of shape {q_shape})")
    tgt_len, batch, embed_dim = q_shape
    src_len = k_shape[0]
    heads = _constant(args, "num_heads", (int,))
    if _constant(args, "embed_dim_to_check", (int,)) != embed_dim or embed_dim % heads:
        raise _LeftAlone(f"embed_dim {embed_dim} does not fit embed_dim_to_check / num_heads {heads}")
    if len(k_shape) != 3 or k_shape[1] != batch or v_shape[:2] != k_shape[:2]:
        raise _LeftAlone(f"key/value shapes {k_shape}/{v_shape} do not fit the query {q_shape}")
    head_dim = embed_dim // heads
    mask, is_causal = _attention_mask(b, args, (batch, heads, tgt_len, src_len), q_val.dtype)

    # in-projection on batch-first inputs: x (L, B, E) -> (B, L, E)
    batch_first = {}
    for x in (query, key, value):
        if x not in batch_first:
            batch_first[x] = b.method("transpose", x, 0, 1)
    q, k, v = _in_projection(b, args, batch_first[query], batch_first[key], batch_first[value])
    # -1 on the token axis: the views stay right when fewer tokens enter the projections (h)
    q, k, v = (b.method("transpose", b.method("view", x, batch, -1, heads, head_dim), 1, 2) for x in (q, k, v))
    dropout_p = float(args["dropout_p"]) if args["training"] else 0.0
    attention = b.function(SDPA_TARGET, q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
    merged = b.method("reshape", b.method("transpose", attention, 1, 2), batch, -1, embed_dim)
    out_weight = _tensor_or_none(args, "out_proj_weight")
    if out_weight is None:
        raise _LeftAlone("out_proj_weight is None")
    projected = b.function(F.linear, merged, out_weight, _tensor_or_none(args, "out_proj_bias"))
    return b.method("transpose", projected, 0, 1)  # (L, B, E), what [0] of the call was


def _result_getters(call: torch.fx.Node) -> list[tuple[torch.fx.Node, int]]:
    """The ``call[i]`` nodes reading the result tuple, or :class:`_LeftAlone` for other users."""
    getters = []
    for user in call.users:
        if not (user.op == "call_function" and user.target is operator.getitem and user.args[0] is call
                and user.args[1] in (0, 1) and not user.kwargs):
            raise _LeftAlone(f"the result tuple is used other than by [0] ({user.name})")
        if user.args[1] == 1 and user.users:
            raise _LeftAlone(f"the attention weights [1] are read ({user.name})")
        getters.append((user, int(user.args[1])))
    return getters


__all__ = ["MHA_TARGETS", "DecomposeResult", "decompose_multi_head_attention", "is_multi_head_attention",
           "mha_arguments"]

