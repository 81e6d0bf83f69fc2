"""Graph utilities shared by the rewrite passes: copy a graph module, find its outputs."""

from __future__ import annotations

import torch
import torch.fx


def copy_graph_module(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, dict[torch.fx.Node, torch.fx.Node]]:
    """A new GraphModule over a copy of ``gm.graph`` (same submodules/attributes) and the node map."""
    graph = torch.fx.Graph()
    node_map: dict[torch.fx.Node, torch.fx.Node] = {}
    outputs, old_output = graph.graph_copy(gm.graph, node_map, return_output_node=True)  # type: ignore[misc]
    graph.output(outputs, type_expr=old_output.type)
    return torch.fx.GraphModule(gm, graph, class_name=type(gm).__name__), node_map


def graph_output(graph: torch.fx.Graph) -> tuple[torch.fx.Node, tuple | list]:
    """The output node of a Dynamo graph and its outputs (a tuple or list).

    Raises:
        TypeError: the graph returns something else (Dynamo always returns a tuple or list).
    """
    output_node = next(node for node in reversed(graph.nodes) if node.op == "output")
    outputs = output_node.args[0]
    if not isinstance(outputs, (tuple, list)):
        raise TypeError("graph output must be a tuple or list (as Dynamo produces)")
    return output_node, outputs
