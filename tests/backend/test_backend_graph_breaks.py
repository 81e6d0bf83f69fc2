"""A model Dynamo cuts into several graphs: the video layout crosses the graph break.

``TrimmedTextDiT`` is the toy joint-attention DiT with one data-dependent step between its patch
embedding and its blocks, as HunyuanVideo Framepack has: the text is trimmed to the mask's
number of valid tokens (``.item()``), which Dynamo cannot trace without ``fullgraph``. The patch
embedding (where the grid is born) then lies in the first graph and the blocks in a later one.
The backend records the first graph's video outputs by tensor and seeds the later graph's real
example inputs with their layouts, so the blocks' attention is reduced.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from helpers import eager_compiler, max_relative_error
from reduction_checks import rewritten_sites
from toy_dit import ToyDiT, toy_inputs

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.runtime import AsymRnRRuntime

REDUCE = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16)
TIMESTEPS = (900.0, 600.0, 300.0)


class TrimmedTextDiT(ToyDiT):
    def forward(self, hidden_states, encoder_hidden_states, timestep, encoder_attention_mask):
        b, c, f, h, w = hidden_states.shape
        video = self.patch(hidden_states).flatten(2).transpose(1, 2)
        video = video + self.time(timestep[:, None] / 1000.0)[:, None]
        valid = int(encoder_attention_mask[0].sum().item())  # data-dependent: a graph break
        text = self.text(encoder_hidden_states[:, :valid])
        for block in self.blocks:
            video, text = block(video, text)
        out = self.out(video).view(b, f, h // 2, w // 2, c, 2, 2)
        return out.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, f, h, w)


def _calls():
    inputs = toy_inputs()
    mask = torch.ones(inputs["encoder_hidden_states"].shape[:2])
    return [{**inputs, "timestep": torch.full_like(inputs["timestep"], t), "encoder_attention_mask": mask}
            for t in TIMESTEPS]


def _run(model, backend, calls):
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, dynamic=False)
    with torch.no_grad():
        outputs = [compiled(**inputs) for inputs in calls]
    torch._dynamo.reset()
    return outputs


@pytest.fixture(autouse=True)
def _eager_variants(monkeypatch):
    monkeypatch.setattr("asymrnr_compile.backend.inductor_compiler", eager_compiler)


def test_the_blocks_after_a_graph_break_are_reduced():
    model, calls = TrimmedTextDiT(), _calls()
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    _run(model, counting, calls)
    assert len(graphs) >= 2, "the toy must be cut by Dynamo for this test to mean anything"
    backend = AsymRnRBackend(REDUCE)
    reduced = _run(model, backend, calls)
    assert len(backend.graphs) == len(graphs)
    runtimes = [graph for graph in backend.graphs if isinstance(graph, AsymRnRRuntime)]
    assert runtimes, f"no graph reduced: {[g['fallback_reason'] for g in backend.report().to_dict()['graphs']]}"
    report = backend.report().to_dict()
    reduced_sites = {(k, site["index"]) for k, graph in enumerate(report["graphs"])
                     for site in graph["sites"] if site.get("applied")}
    assert len(reduced_sites) == 2  # both blocks' joint attention
    for runtime in runtimes:
        assert runtime.fallback_reason is None
        assert rewritten_sites(runtime) == {site.index for site in runtime.sites if site.video_tokens}
        assert all(site.kind == "joint" and site.grid == (2, 8, 8) for site in runtime.sites)
    assert sum(graph.get("cache_misses", 0) for graph in report["graphs"]) > 0
    with torch.no_grad():
        eager = [model(**inputs) for inputs in calls]
    errors = [max_relative_error(r, e) for r, e in zip(reduced, eager)]
    assert all(0.0 < error < 0.5 for error in errors), errors


def test_ratio_0_after_a_graph_break_equals_the_unreduced_model():
    model, calls = TrimmedTextDiT(), _calls()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, min_video_tokens=16))
    outputs = _run(model, backend, calls)
    with torch.no_grad():
        eager = [model(**inputs) for inputs in calls]
    assert len(backend.graphs) >= 2
    assert all(max_relative_error(o, e) <= 1e-5 for o, e in zip(outputs, eager))


def test_a_graph_without_a_recorded_input_is_not_seeded():
    """The handoff is by tensor identity: a later graph whose inputs are new tensors (not an
    earlier graph's outputs) gets no layout, and its attention stays unreduced with a reason."""
    from asymrnr_compile.analysis.graph_outputs import handed_off_seeds
    from asymrnr_compile.runtime.layout_handoff import LayoutHandoff

    handoff = LayoutHandoff()
    gm = torch.fx.symbolic_trace(lambda x: x * 2)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            node.meta["example_value"] = torch.empty(2, 3)
    seeds = handed_off_seeds(gm, [torch.randn(2, 3)], handoff.layout_of)
    assert not seeds.seeds and "no input of this graph" in seeds.reason
