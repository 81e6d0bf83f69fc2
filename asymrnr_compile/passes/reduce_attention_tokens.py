"""Rewrite pass: run attention on fewer video tokens and restore full-length outputs.

For each site of a :class:`~asymrnr_compile.plan.reduction_plan.ReductionPlan`, the SDPA call is wrapped in the
token-reduction ops of :mod:`asymrnr_compile.ops`. The pass only edits graphs; all arithmetic
lives in ``ops/`` and sizes come from the plan as Python ints.

Before (a joint site, text first, ``T`` text and ``N`` video tokens)::

    attn = scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask)

After (q reduced with a fresh matching, kv reduced with a cached one)::

    q_split     = TokenSplit(asymrnr_site0_q_dst, asymrnr_site0_q_src)         # graph inputs
    q_matching  = match_tokens(q, q_split, "euclidean", start=T)               # -> extra outputs
    q_indices   = reduction_indices(q_split, q_matching, K_q)                  # -> extra outputs
    q_reduced   = reduce_tokens(q, q_indices, "replace", start=T)              # (B, H, T+K_q, d)
    kv_indices  = ReductionIndices(asymrnr_site0_kv_keep, asymrnr_site0_kv_restore)  # cached inputs
    k_reduced   = reduce_tokens(k, kv_indices, "replace", start=T)
    v_reduced   = reduce_tokens(v, kv_indices, "replace", start=T)
    mask_cols   = reduce_mask(mask, kv_indices, start=T)                       # key axis
    mask_rows   = reduce_mask(mask_cols, q_indices, start=T, dim=-2)           # query axis
    attn_small  = scaled_dot_product_attention(query=q_reduced, key=k_reduced, ...)
    attn        = restore_tokens(attn_small, q_indices, start=T)               # (B, H, T+N, d)
    attn        = with_dim_order(attn, (0, 2, 1, 3))   # the layout its reader's transpose wants

The last line appears when the attention output's only reader is a transpose or a permute
(diffusers' ``out.transpose(1, 2).reshape(B, L, H * d)``): the restore then writes its result in
the layout that makes the reader's view contiguous, so the reshape after it is a view instead of
a strided copy of the whole output (the restore and the layout are one fused kernel).

With ``plan.proportional_attention`` the kv-reduced call also gets the kept keys'
log-multiplicity as a bias (``mask = proportional_attention_mask(mask_cols, k_reduced,
kv_indices, start=T)``, before the query-axis reduction; a new float mask when there was none).

Matching runs on the features the method prescribes: q on the queries, kv on the values
(docs/method.md). With ``plan.match_on == "hidden_states"`` both are matched on the site's
input hidden states ``x (B, L, C)`` instead, where the analysis found them
(``AttentionSite.hidden_matching_problem``), and the indices get a size-1 head axis::

    q_matching  = match_tokens(x, q_split, "euclidean", start=S_in)             # (B, N_src)
    q_indices   = indices_over_heads(reduction_indices(q_split, q_matching, K_q))  # (B, 1, K_q)
    q_reduced   = reduce_tokens(q, q_indices, "replace", start=T)              # all H heads

With ``plan.token_selection == "random"`` the matching is drawn at random instead
(``ops.random_matching``, the token-dropping baseline); everything else is the same. Text tokens
are outside the video span and are never touched.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field

import torch
import torch.fx

from asymrnr_compile import ops
from asymrnr_compile.analysis.fx_nodes import node_value, nodes_between, permutation_of
from asymrnr_compile.analysis.sdpa import sdpa_arguments
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.passes.graph_utils import copy_graph_module, graph_output
from asymrnr_compile.passes.split_at_attention import ATTENTION_SUBGRAPH_META
from asymrnr_compile.plan.reduction_plan import (
    INDEX_FIELDS,
    MATCHING_FIELDS,
    SPLIT_FIELDS,
    CacheSlot,
    FeaturePlan,
    ReductionPlan,
    SitePlan,
)

logger = logging.getLogger("asymrnr_compile.passes")

@dataclass
class RewriteResult:
    """A rewritten copy of the graph and the order of its extra inputs and outputs.

    Attributes:
        gm: the rewritten graph module (the input graph is left untouched).
        extra_inputs: slots of the placeholders appended after the original inputs, in order.
        extra_outputs: slots of the outputs appended after the original outputs, in order.
        num_original_outputs: how many outputs the original graph had.
        rewritten_sites: indices of the sites that were rewritten (the counter tests assert on).
    """

    gm: torch.fx.GraphModule
    extra_inputs: list[CacheSlot] = field(default_factory=list)
    extra_outputs: list[CacheSlot] = field(default_factory=list)
    num_original_outputs: int = 0
    rewritten_sites: list[int] = field(default_factory=list)


class _SiteRewriter:
    """Inserts the nodes for one site; keeps the graph, the new slots and the node map."""

    def __init__(self, graph: torch.fx.Graph, plan: ReductionPlan, result: RewriteResult,
                 first_compute_node: torch.fx.Node) -> None:
        self.graph = graph
        self.plan = plan
        self.result = result
        self.first_compute_node = first_compute_node
        self.new_outputs: list[torch.fx.Node] = []
        self.current_site: int | None = None  # site whose nodes are being inserted

    def placeholder(self, slot: CacheSlot) -> torch.fx.Node:
        with self.graph.inserting_before(self.first_compute_node):
            node = self.graph.placeholder(slot.placeholder_name)
        self.result.extra_inputs.append(slot)
        return node

    def call(self, target, *args, **kwargs) -> torch.fx.Node:
        """Insert a call, tagged as part of the current site's attention subgraph."""
        node = self.graph.call_function(target, args, kwargs)
        node.meta[ATTENTION_SUBGRAPH_META] = self.current_site
        return node

    def output(self, node: torch.fx.Node, slot: CacheSlot) -> None:
        self.new_outputs.append(node)
        self.result.extra_outputs.append(slot)

    def indices(self, site_index: int, feature: str, feature_plan: FeaturePlan,
                matched: torch.fx.Node, start: int, *, over_heads: bool = False) -> torch.fx.Node:
        """Reduction indices of one feature: computed from a fresh matching, or graph inputs.

        A computing variant outputs the matching and the indices (graph outputs are realised
        buffers, so the gathers read them instead of recomputing index arithmetic per element);
        a reusing variant takes the indices as inputs. ``over_heads``: ``matched`` has no head
        axis (hidden states ``(B, L, C)``), so the indices get a size-1 one
        (:func:`~asymrnr_compile.ops.indices_over_heads`) before they are output or used.
        """
        if not feature_plan.compute_matching:
            cached = [self.placeholder(CacheSlot(site_index, feature, name)) for name in INDEX_FIELDS]
            return self.call(ops.ReductionIndices, *cached)
        split_nodes = [self.placeholder(CacheSlot(site_index, feature, name)) for name in SPLIT_FIELDS]
        split = self.call(ops.TokenSplit, *split_nodes)
        if self.plan.token_selection == "random":  # the token-dropping baseline: no similarity
            matching = self.call(ops.random_matching, matched, split, start=start,
                                 seed=self.plan.selection_seed(site_index, feature))
        else:
            matching = self.call(
                ops.match_tokens, matched, split, self.plan.similarity,
                start=start, chunk_bytes=self.plan.match_chunk_bytes, kernel=self.plan.match_kernel,
                project_dims=self.plan.match_dims, projection_seed=self.plan.seed,
            )
        indices = self.call(ops.reduction_indices, split, matching, feature_plan.num_keep)
        if over_heads:
            indices = self.call(ops.indices_over_heads, indices)
        for position, name in enumerate(MATCHING_FIELDS):
            self.output(self.call(operator.getitem, matching, position), CacheSlot(site_index, feature, name))
        for position, name in enumerate(INDEX_FIELDS):
            self.output(self.call(operator.getitem, indices, position), CacheSlot(site_index, feature, name))
        return indices


def _consumer_dim_order(site: AttentionSite) -> tuple[int, ...] | None:
    """The layout in which the model reads the site's attention output: when its only reader is
    a transpose or a permute (diffusers' ``out.transpose(1, 2).reshape(B, L, H * d)``), that
    permutation, so that the restored output laid out in it makes the reader's view contiguous
    and the reshape after it free (:mod:`asymrnr_compile.ops.layout`); else None."""
    value = node_value(site.node)
    users = list(site.node.users)
    if not isinstance(value, torch.Tensor) or len(users) != 1:
        return None
    return permutation_of(users[0], site.node, value.dim())


def _rewrite_site(rewriter: _SiteRewriter, site: AttentionSite, site_plan: SitePlan,
                  node_map: dict[torch.fx.Node, torch.fx.Node]) -> None:
    graph = rewriter.graph
    sdpa = node_map[site.node]
    kwargs = sdpa_arguments(sdpa)
    start = site.video_start
    mode = rewriter.plan.reduce_mode
    query, key, value = kwargs["query"], kwargs["key"], kwargs["value"]
    mask = kwargs.get("attn_mask")

    on_hidden = site.matches_on_hidden_states(rewriter.plan.match_on)
    if on_hidden:  # both features matched on the hidden states (B, L, C), shared by the heads
        assert site.hidden_states is not None and site.hidden_states_video_start is not None  # checked
        matched_q = matched_kv = node_map[site.hidden_states]
        matched_start = site.hidden_states_video_start
    else:
        matched_q, matched_kv, matched_start = query, value, start

    rewriter.current_site = site.index
    with graph.inserting_before(sdpa):
        q_indices = kv_indices = None
        if site_plan.q is not None:
            q_indices = rewriter.indices(site.index, "q", site_plan.q, matched_q, matched_start, over_heads=on_hidden)
            kwargs["query"] = rewriter.call(ops.reduce_tokens, query, q_indices, mode, start=start)
        if site_plan.kv is not None:
            kv_indices = rewriter.indices(site.index, "kv", site_plan.kv, matched_kv, matched_start,
                                          over_heads=on_hidden)
            kwargs["key"] = rewriter.call(ops.reduce_tokens, key, kv_indices, mode, start=start)
            kwargs["value"] = rewriter.call(ops.reduce_tokens, value, kv_indices, mode, start=start)
            if mask is not None:
                mask = rewriter.call(ops.reduce_mask, mask, kv_indices, start=start)
            if rewriter.plan.proportional_attention:
                mask = rewriter.call(ops.proportional_attention_mask, mask, kwargs["key"], kv_indices, start=start)
        if mask is not None and q_indices is not None:  # a broadcast (size-1) query axis stays as is
            mask = rewriter.call(ops.reduce_mask, mask, q_indices, start=start, dim=-2)
        if mask is not None:
            kwargs["attn_mask"] = mask
        reduced_attention = rewriter.call(sdpa.target, **kwargs)
        reduced_attention.meta.update({k: v for k, v in sdpa.meta.items() if k in ("nn_module_stack", "stack_trace")})
        attention = reduced_attention
        if q_indices is not None:
            attention = rewriter.call(ops.restore_tokens, reduced_attention, q_indices, start=start)
            order = _consumer_dim_order(site)
            if order is not None and order != tuple(range(len(order))):
                attention = rewriter.call(ops.with_dim_order, attention, order)
    sdpa.replace_all_uses_with(attention)
    graph.erase_node(sdpa)


def _rewrite_site_hidden_states(rewriter: _SiteRewriter, site: AttentionSite, site_plan: SitePlan,
                                node_map: dict[torch.fx.Node, torch.fx.Node]) -> None:
    """h reduction: the block's projections and attention run on the kept hidden states.

    Before::

        x = norm(h_in); q, k, v = to_q(x), to_k(x), to_v(x); a = sdpa(q, k, v); o = to_out(a)

    After (``x`` is the site's ``hidden_states`` node, ``o`` its ``output_projection``)::

        x_small = reduce_tokens(x, h_indices, start=S_in)      # matching on x itself
        q, k, v = to_q(x_small), ...; a = sdpa(q, k, v); o_small = to_out(a)
        o = restore_tokens(o_small, h_indices, start=S_out)

    Only the readers of ``x`` on the way to attention see the reduced tokens; the analysis
    guarantees that nothing on that path hard-codes the token count or has other readers.
    """
    graph = rewriter.graph
    plan = site_plan.h
    assert plan is not None  # caller checked
    hidden, projection, sdpa = node_map[site.hidden_states], node_map[site.output_projection], node_map[site.node]
    start_in, start_out = site.hidden_states_video_start, site.output_video_start
    if start_in is None or start_out is None:
        raise ValueError(f"site {site.name}: h reduction needs the video span of the hidden states and of "
                         f"the output projection, which the analysis did not find")
    if site.attn_mask is not None:
        raise ValueError(f"site {site.name}: h reduction with an attention mask is not supported")
    sdpa_kwargs = sdpa_arguments(sdpa)
    on_path = nodes_between(hidden, [sdpa_kwargs["query"], sdpa_kwargs["key"], sdpa_kwargs["value"]])
    rewriter.current_site = site.index
    with graph.inserting_before(hidden.next):  # right after hidden, in creation order
        indices = rewriter.indices(site.index, "h", plan, hidden, start_in)
        reduced = rewriter.call(ops.reduce_tokens, hidden, indices, rewriter.plan.reduce_mode, start=start_in)
        # Only tensors cross from this subgraph to the restore's (compiled separately).
        index_tensors = [rewriter.call(operator.getitem, indices, position) for position in range(len(INDEX_FIELDS))]
    for user in list(hidden.users):
        if user in on_path:
            user.replace_input_with(hidden, reduced)
    with graph.inserting_before(projection.next):
        indices_again = rewriter.call(ops.ReductionIndices, *index_tensors)
        restored = rewriter.call(ops.restore_tokens, projection, indices_again, start=start_out)
    projection.replace_all_uses_with(restored, delete_user_cb=lambda user: user is not restored)


def reduce_attention_tokens(gm: torch.fx.GraphModule, sites: list[AttentionSite],
                            plan: ReductionPlan) -> RewriteResult:
    """Rewrite a copy of ``gm`` so that the planned sites attend over fewer video tokens.

    Args:
        gm: the Dynamo graph (not modified).
        sites: the analysis of ``gm`` (:func:`asymrnr_compile.analysis.find_attention_sites`).
        plan: what to reduce; sites absent from the plan are left as they are.

    Returns:
        A :class:`RewriteResult`; ``result.rewritten_sites`` lists the sites actually changed.

    Raises:
        ValueError: a planned site is unknown, not reducible, or asks for an unavailable feature.
    """
    by_index = {site.index: site for site in sites}
    new_gm, node_map = copy_graph_module(gm)
    graph = new_gm.graph
    output_node, original_outputs = graph_output(graph)
    result = RewriteResult(gm=new_gm, num_original_outputs=len(original_outputs))
    first_compute = next(node for node in graph.nodes if node.op != "placeholder")
    rewriter = _SiteRewriter(graph, plan, result, first_compute)

    for site_plan in plan.sites:
        site = by_index.get(site_plan.site_index)
        if site is None:
            raise ValueError(f"plan names site {site_plan.site_index}, but the graph has sites {sorted(by_index)}")
        for feature, _ in site_plan.items():
            if feature not in site.features:
                raise ValueError(f"site {site.name}: feature {feature!r} is not reducible here "
                                 f"(available: {list(site.features)}; {site.reason or 'no reason given'})")
        if site_plan.h is not None:
            if site_plan.q is not None or site_plan.kv is not None:
                raise ValueError(f"site {site.name}: h reduction excludes q and kv at the same site")
            _rewrite_site_hidden_states(rewriter, site, site_plan, node_map)
        else:
            _rewrite_site(rewriter, site, site_plan, node_map)
        result.rewritten_sites.append(site.index)
        logger.debug("rewrote site %s with %s", site.name, site_plan)

    rewritten_outputs = output_node.args[0]  # read again: the rewrite replaced uses in it
    output_node.args = (tuple(rewritten_outputs) + tuple(rewriter.new_outputs),)
    graph.lint()
    new_gm.recompile()
    return result
