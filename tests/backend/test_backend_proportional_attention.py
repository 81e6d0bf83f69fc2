"""``proportional_attention=True`` through the backend: the bias op enters every kv-reduced
site's graph, the output changes, and nothing changes where kv is not reduced.

Every run asserts that it reduced (``assert_reduced``): two runs that both fell back to plain
Inductor would be equal too."""

from __future__ import annotations

import torch
import torch._dynamo
from helpers import max_relative_error
from reduction_checks import assert_reduced

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_lab.models import build_reference_model, reference_inputs

PRESET = "tiny"
# The published method, where proportional attention is off unless asked for.
OPTIONS = {"preset": "published", "cache_steps": 2, "min_video_tokens": 16}


def _run(**options) -> tuple[torch.Tensor, AsymRnRBackend]:
    """One reduced call; asserts that both sites were rewritten and matched, and that the output
    is not the unreduced model's."""
    model = build_reference_model(PRESET)
    inputs = reference_inputs(PRESET)
    backend = AsymRnRBackend(AsymRnRConfig(**OPTIONS, **options))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        out = compiled(**inputs)
        unreduced = model(**inputs)
    torch._dynamo.reset()
    features = {f for f, ratio in (("q", options["q_ratio"]), ("kv", options["kv_ratio"])) if ratio > 0}
    assert_reduced(backend, sites={0, 1}, features={0: features, 1: features})
    assert max_relative_error(out, unreduced) > 1e-4
    return out, backend


def _bias_nodes(backend: AsymRnRBackend) -> int:
    (runtime,) = backend.graphs
    return sum(n.target is ops.proportional_attention_mask
               for variant in runtime.variants.values() if variant.rewrite is not None
               for n in variant.rewrite.gm.graph.nodes)


def test_bias_fires_on_every_kv_reduced_site_and_changes_the_output():
    with_bias, backend = _run(q_ratio=0.0, kv_ratio=0.5, proportional_attention=True)
    without, plain_backend = _run(q_ratio=0.0, kv_ratio=0.5)
    sites = [s for s in backend.report().to_dict()["graphs"][0]["sites"] if s.get("applied")]
    assert sites and _bias_nodes(backend) == len(sites)
    assert _bias_nodes(plain_backend) == 0
    assert backend.report().to_dict()["config"]["proportional_attention"] is True
    assert torch.isfinite(with_bias).all()
    assert not torch.allclose(with_bias, without)


def test_without_kv_reduction_the_flag_changes_nothing():
    with_flag, backend = _run(q_ratio=0.5, kv_ratio=0.0, proportional_attention=True)
    without, _ = _run(q_ratio=0.5, kv_ratio=0.0)
    assert _bias_nodes(backend) == 0
    torch.testing.assert_close(with_flag, without, rtol=0, atol=0)
