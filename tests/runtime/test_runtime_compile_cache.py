"""Every subgraph asymrnr compiles is cacheable by AOTAutograd's cache (warm starts, docs/deployment.md).

AOTAutograd's cache bypasses a graph that calls a Python function it does not know or calls a
method on a node without an example value. The rewritten subgraphs did both (``ReductionIndices``,
``reduce_tokens``...; placeholders for values the rewrite made): a warm start then skipped
Inductor (FX graph cache hit) but still traced those subgraphs with AOTAutograd. Here Inductor is
stubbed out: each subgraph is only checked with AOTAutograd's own ``check_cacheable`` under the
config the backend compiles with, then run eagerly, so the test takes seconds. The warm start
across processes itself is tested in ``tests/benchmarks/test_benchmarks_warm_start.py`` (slow).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._functorch._aot_autograd import autograd_cache

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_compile.runtime.compile_subgraphs import _cacheable_ops
from asymrnr_lab.models import build_reference_model, reference_inputs


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("options", [
    pytest.param({"q_ratio": 0.5, "kv_ratio": 0.3}, id="matched"),
    pytest.param({"q_ratio": 0.5, "kv_ratio": 0.3, "token_selection": "random", "proportional_attention": True},
                 id="random-proportional"),
])
def test_every_subgraph_of_every_variant_is_aot_cacheable(monkeypatch, options):
    import torch._inductor.compile_fx as compile_fx_module

    checked: list[torch.fx.GraphModule] = []
    bypassed: list[str] = []

    def check_only(gm, example_inputs, config_patches=None, **_):
        with torch._inductor.config.patch(config_patches or {}):
            try:
                autograd_cache.check_cacheable(gm)
            except autograd_cache.BypassAOTAutogradCache as error:
                bypassed.append(str(error).splitlines()[0])
        checked.append(gm)
        return gm.forward

    monkeypatch.setattr(compile_fx_module, "compile_fx", check_only)
    model = build_reference_model("tiny")
    inputs = reference_inputs("tiny")
    backend = AsymRnRBackend(AsymRnRConfig(min_video_tokens=16, cache_steps=2, **options))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        for step in range(2):  # compute, then reuse the matching: both variants
            compiled(**{**inputs, "timestep": torch.full((2,), 900.0 - 100 * step)})
    report = backend.report().to_dict()
    assert report["cache_misses"] > 0 and report["cache_hits"] > 0, backend.report().summary()
    assert len(checked) >= 4  # the shared subgraphs and the attention subgraphs of both variants
    assert not bypassed, bypassed


def test_cacheable_ops_are_keyed_by_the_ops_source():
    names = _cacheable_ops()
    assert "asymrnr_compile.ops.reduce.reduce_tokens" in names
    assert "asymrnr_compile.ops.reduce.ReductionIndices" in names
    assert len(set(names.values())) == 1  # one key: the hash of every source file of the package
    for name in ops.__all__:
        value = getattr(ops, name)
        if callable(value) and getattr(value, "__module__", "").startswith("asymrnr_compile.ops"):
            assert f"{value.__module__}.{value.__name__}" in names
