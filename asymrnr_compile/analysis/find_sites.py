"""Find every attention operation of a Dynamo graph and describe its token layout.

:func:`find_attention_sites` is the analysis entry point of the backend. It

1. propagates token layouts over the whole graph once (:mod:`.propagate_layout`): which axis
   of each tensor holds tokens, which segments of it are video tokens on which grid;
2. for each ``scaled_dot_product_attention`` call, in graph order, reads the kind, text span,
   video span and grid from the layouts of its query and key (:mod:`.classify_site`);
3. finds the nodes h-reduction needs and whether it is safe (:mod:`.projection_paths`).

It never mutates the graph and never raises on a graph it does not understand: such a site
comes back unreducible with a reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx

from asymrnr_compile.analysis.classify_site import TokenAxes, read_token_axes
from asymrnr_compile.analysis.fx_nodes import node_value, op_name
from asymrnr_compile.analysis.input_grid import input_grid_seeds
from asymrnr_compile.analysis.other_attention import OtherAttention, find_other_attention
from asymrnr_compile.analysis.projection_paths import (
    ProjectionPaths,
    find_projection_paths,
    share_projection_input,
)
from asymrnr_compile.analysis.propagate_layout import (
    LayoutValue,
    is_layout,
    propagate_token_layouts,
)
from asymrnr_compile.analysis.sdpa import is_sdpa, sdpa_arguments
from asymrnr_compile.analysis.site import AttentionSite, Feature
from asymrnr_compile.analysis.site_names import block_of, site_names
from asymrnr_compile.analysis.token_layout import concrete, describe_dim, shape_of, video_factors
from asymrnr_compile.reasons import NO_GRID_FIX, Reason, ReasonKind, fix_of, joined, kind_of

logger = logging.getLogger("asymrnr_compile.analysis")

#: Features of a self or joint site (plus "h" when h-reduction is safe there).
SELF_FEATURES: tuple[Feature, ...] = ("q", "kv")
#: Features of a cross-attention site: the keys are another context.
CROSS_FEATURES: tuple[Feature, ...] = ("q",)


def find_attention_sites(gm: torch.fx.GraphModule, *,
                         seeds: Mapping[torch.fx.Node, LayoutValue] | None = None) -> list[AttentionSite]:
    """All SDPA calls of ``gm``, in graph order, with their token layout.

    Args:
        gm: the FX graph Dynamo hands a backend (``node.meta["example_value"]`` holds
            FakeTensors); graphs without metadata give unreducible sites.
        seeds: starting layouts of some nodes, used instead of computing them: the inputs of a
            graph whose video grid is declared from outside
            (:func:`~asymrnr_compile.analysis.declared_layout.declared_layout_seeds`).
            Default None: every layout comes from the graph itself.

    Returns:
        One :class:`AttentionSite` per ``scaled_dot_product_attention`` node (an empty list
        when there is none).
    """
    if not any(is_sdpa(node) for node in gm.graph.nodes):
        return []
    return analyse_graph(gm, seeds=seeds).sites


@dataclass
class GraphAnalysis:
    """What the analysis found in one graph.

    Attributes:
        gm: the graph analysed.
        sites: every attention site, in graph order (see :func:`find_attention_sites`).
        layouts: the token layout of every node (:func:`~.propagate_layout.propagate_token_layouts`),
            from the seeds that were used.
    """

    gm: torch.fx.GraphModule
    sites: list[AttentionSite]
    layouts: dict[torch.fx.Node, LayoutValue]

    @property
    def other_attention(self) -> list[OtherAttention]:
        """Attention over video tokens that is not SDPA (:func:`~.other_attention.find_other_attention`)."""
        return find_other_attention(self.gm, self.layouts)


def analyse_graph(gm: torch.fx.GraphModule, *,
                  seeds: Mapping[torch.fx.Node, LayoutValue] | None = None) -> GraphAnalysis:
    """The sites of :func:`find_attention_sites` and the layouts they were read from (also for a
    graph without attention, whose outputs may carry video tokens to a later graph)."""
    nodes = [node for node in gm.graph.nodes if is_sdpa(node)]
    analysis = _find_sites(gm, nodes, seeds)
    if seeds is None and nodes and not any(site.video_tokens for site in analysis.sites):
        # no patch-embedding convolution or coordinate grid: a latent patchified by hand?
        found = input_grid_seeds(gm)
        if found.seeds:
            logger.debug("video grid axes from the inputs: %s",
                         {node.name: describe_layout(layout) for node, layout in found.seeds.items()})
            analysis = _find_sites(gm, nodes, found.seeds)
        else:
            logger.debug("no video grid from the inputs: %s", found.reason)
    return analysis


def _find_sites(gm: torch.fx.GraphModule, nodes: list[torch.fx.Node],
                seeds: Mapping[torch.fx.Node, LayoutValue] | None) -> GraphAnalysis:
    try:
        env = propagate_token_layouts(gm, seeds)
    except Exception as exc:  # noqa: BLE001 - never break the user's model
        logger.warning("token layout propagation failed: %s", exc)
        env = {}
    names = site_names(nodes)
    no_grid = None if _has_video(env) else no_grid_reason(gm)
    sites = []
    for index, (node, name) in enumerate(zip(nodes, names)):
        try:
            site = _analyse(gm, env, node, index, name)
        except Exception as exc:  # noqa: BLE001 - one odd site must not hide the others
            logger.warning("analysis of attention site %s failed: %r", name, exc)
            site = _failed_site(node, index, name, exc)
        if no_grid is not None and kind_of(site.reason) is ReasonKind.NO_VIDEO_TOKENS and site.reason is not None:
            site.reason = Reason(f"{site.reason}: {no_grid}", ReasonKind.NO_VIDEO_TOKENS, fix=fix_of(no_grid))
        logger.debug(
            "site %d %s: kind=%s video=%s grid=%s features=%s reason=%s",
            index, name, site.kind, site.video_tokens, site.grid, site.features, site.reason,
        )
        sites.append(site)
    return GraphAnalysis(gm, sites, env)


#: Ops that place rows of a sequence by an index tensor: which rows are video is then data.
INDEXED_PLACEMENT_OPS = ("index_copy", "index_copy_", "index_put", "index_put_", "scatter", "scatter_", "index_add")


def _has_video(env: Mapping[torch.fx.Node, LayoutValue]) -> bool:
    def carries(value: LayoutValue) -> bool:
        if isinstance(value, tuple) and not is_layout(value):  # Pieces
            return any(carries(v) for v in value)
        return is_layout(value) and bool(video_factors(value))  # type: ignore[arg-type]

    return any(carries(value) for value in env.values())


def no_grid_reason(gm: torch.fx.GraphModule) -> Reason:
    """Why a graph has no video grid at all (the reason of its attention sites), with the fix."""
    reason = ("no video grid in this graph: no patch-embedding convolution, coordinate meshgrid or patchified "
              "video input reaches its attention")
    placed = sorted({op_name(node, gm) for node in gm.graph.nodes} & set(INDEXED_PLACEMENT_OPS))
    if placed:
        reason += (f"; its sequence is assembled with index tensors ({', '.join(placed)}), so which tokens are video "
                   "is data, not graph structure")
        return Reason(reason, ReasonKind.NO_VIDEO_TOKENS)  # no compile setting helps: the layout is data
    return Reason(reason, ReasonKind.NO_VIDEO_TOKENS, fix=NO_GRID_FIX)


def describe_layout(layout: LayoutValue) -> str:
    """Short text of a layout, e.g. ``([2], [4], [f2], [h16], [w16])`` (for logs)."""
    if not is_layout(layout):
        return repr(layout)
    return "(" + ", ".join(describe_dim(dim) for dim in layout) + ")"  # type: ignore[union-attr]


def _analyse(
    gm: torch.fx.GraphModule,
    env: dict[torch.fx.Node, LayoutValue],
    node: torch.fx.Node,
    index: int,
    name: str,
) -> AttentionSite:
    args = sdpa_arguments(node)
    query, key, value = args["query"], args["key"], args["value"]
    if not all(isinstance(x, torch.fx.Node) for x in (query, key, value)):
        raise ValueError("query, key and value are not graph nodes")
    block, block_index = block_of(node)
    mask = args["attn_mask"] if isinstance(args["attn_mask"], torch.fx.Node) else None
    site = AttentionSite(
        name=name,
        index=index,
        node=node,
        query=query,
        key=key,
        value=value,
        attn_mask=mask,
        is_causal=bool(args["is_causal"]) if isinstance(args["is_causal"], bool) else True,
        scale=float(args["scale"]) if isinstance(args["scale"], (int, float)) else None,
        dropout_p=float(args["dropout_p"]) if isinstance(args["dropout_p"], (int, float)) else 0.0,
        query_tokens=_tokens(query, gm),
        key_tokens=_tokens(key, gm),
        block=block,
        block_index=block_index,
    )
    q_layout, k_layout = _layout(env.get(query)), _layout(env.get(key))
    if q_layout is None or k_layout is None:
        site.reason = Reason("could not find the token dimension (no shape metadata)")
        return site
    axes = read_token_axes(q_layout, k_layout)
    if (
        axes.kind == "cross"
        and site.key_tokens is not None
        and site.key_tokens == site.query_tokens
        and share_projection_input(gm, query, key)
    ):
        # same tokens, labelled differently (e.g. only q went through a labelled RoPE table)
        axes = replace(axes, kind="self")
    _apply_axes(site, axes)
    if not isinstance(args["is_causal"], bool):
        _refuse(site, Reason("is_causal is not a constant"))
    elif site.is_causal:
        _refuse(site, Reason("causal mask"))
    if axes.kind == "unknown":
        return site
    targets = [query, key, value] if axes.kind in ("self", "joint") else [query]
    paths = find_projection_paths(gm, env, node, targets, axes, index)
    _apply_paths(site, paths)
    if site.reducible and axes.kind in ("self", "joint"):
        if paths.h_problem is None:
            site.features = SELF_FEATURES + ("h",)
        else:
            _note(site, Reason(f"h unavailable: {paths.h_problem}"))
            logger.info("site %s: h unavailable: %s", name, paths.h_problem)
    return site


def _apply_axes(site: AttentionSite, axes: TokenAxes) -> None:
    site.kind = axes.kind
    site.text_position = axes.text_position
    site.text_tokens = axes.text_tokens
    site.tokens_before = axes.tokens_before
    site.video_tokens = axes.video_tokens
    site.grid = axes.grid
    if axes.reducible and axes.kind in ("self", "joint", "cross"):
        site.reducible = True
        site.features = CROSS_FEATURES if axes.kind == "cross" else SELF_FEATURES
        if axes.grid is None:
            _note(site, Reason("grid not recovered: reduction falls back to a 1-D split"))
    else:
        site.reason = axes.reason


def _note(site: AttentionSite, note: Reason) -> None:
    """Add a note on an unavailable feature to a reducible site's reason."""
    site.reason = joined(site.reason, note)


def _apply_paths(site: AttentionSite, paths: ProjectionPaths) -> None:
    site.hidden_states = paths.hidden_states
    site.output_projection = paths.output_projection
    site.token_dim = paths.hidden_states_token_dim
    site.hidden_states_video_start = paths.hidden_states_video_start
    site.output_video_start = paths.output_video_start


def _refuse(site: AttentionSite, reason: Reason) -> None:
    site.reducible = False
    site.features = ()
    site.reason = reason


def _layout(value: LayoutValue) -> Any:
    return value if is_layout(value) else None


def _tokens(node: torch.fx.Node, gm: torch.fx.GraphModule) -> int | None:
    shape = shape_of(node_value(node, gm))
    if shape is None or len(shape) < 2:
        return None
    return concrete(shape[-2])


def _failed_site(node: torch.fx.Node, index: int, name: str, exc: Exception) -> AttentionSite:
    inputs = [a for a in node.args if isinstance(a, torch.fx.Node)]
    inputs += [a for a in node.kwargs.values() if isinstance(a, torch.fx.Node)]
    q, k, v = (inputs + [node] * 3)[:3]
    return AttentionSite(
        name=name,
        index=index,
        node=node,
        query=q,
        key=k,
        value=v,
        reason=Reason(f"analysis failed: {type(exc).__name__}: {exc}"),
    )
