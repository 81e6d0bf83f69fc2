"""``token_selection="random"``: the token-dropping baseline through the backend.

It must run the same plan as matched AsymRnR (same sites, kept counts, cache windows), put the
random selection op in the graph instead of the matcher, and give a different result.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from reduction_checks import assert_reduced
from torch._dynamo.utils import counters

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_lab.models import build_reference_model, reference_inputs
from asymrnr_lab.sampling import SamplerConfig, sample

PRESET = "tiny"
OPTIONS = {"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, "min_video_tokens": 16}


def _run(selection: str) -> tuple[torch.Tensor, AsymRnRBackend, list[int]]:
    """The final latent, the backend, and the steps that computed matchings (read before
    ``torch._dynamo.reset()``, which resets the backend: a new video, so they are cleared)."""
    model = build_reference_model(PRESET)
    inputs = reference_inputs(PRESET)
    backend = AsymRnRBackend(AsymRnRConfig(token_selection=selection, **OPTIONS))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        latent = sample(compiled, inputs["hidden_states"][:1], inputs["encoder_hidden_states"][:1],
                        inputs["encoder_hidden_states"][1:], SamplerConfig(steps=3))
    (runtime,) = backend.graphs
    matching_steps = list(runtime.matching_steps)
    torch._dynamo.reset()
    return latent, backend, matching_steps


def _graph_targets(backend: AsymRnRBackend) -> set[str]:
    (runtime,) = backend.graphs
    names = set()
    for variant in runtime.variants.values():
        if variant.rewrite is not None:
            names |= {getattr(n.target, "__name__", str(n.target)) for n in variant.rewrite.gm.graph.nodes}
    return names


def test_random_selection_fires_with_the_matched_plan_and_differs():
    counters.clear()
    random_latent, random_backend, random_matching_steps = _run("random")
    assert counters["stats"]["unique_graphs"] == 1  # no recompile
    matched_latent, matched_backend, _ = _run("matched")

    random_report = assert_reduced(random_backend, sites={0, 1})
    matched_report = assert_reduced(matched_backend, sites={0, 1})
    assert random_report["config"]["token_selection"] == "random"
    # the rewrite fired: same sites, same kept counts, same cache windows as the matched run
    random_sites = [s.get("applied") for s in random_report["graphs"][0]["sites"]]
    assert any(random_sites) and random_sites == [s.get("applied") for s in matched_report["graphs"][0]["sites"]]
    for key in ("cache_misses", "cache_hits", "num_variants"):
        assert random_report[key] == matched_report[key] > 0
    assert random_matching_steps == [0, 2]
    # the random selection op replaced the matcher in the graph
    random_ops, matched_ops = _graph_targets(random_backend), _graph_targets(matched_backend)
    assert "random_matching" in random_ops and "match_tokens" not in random_ops
    assert "match_tokens" in matched_ops and "random_matching" not in matched_ops

    assert torch.isfinite(random_latent).all()
    assert not torch.allclose(random_latent, matched_latent, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", ["randm", "strided", 1])
def test_bad_token_selection_is_rejected(value):
    with pytest.raises(ValueError, match=r"token_selection must be one of \('matched', 'random'\)"):
        AsymRnRConfig.from_options({"token_selection": value})
