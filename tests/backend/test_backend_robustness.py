"""The backend under the inputs real pipelines and users produce (the step signal, bounded caches,
warm-up calls, threads, leaks) and the warnings users see when something keeps it from helping.

Each test here failed before the fix it covers.
"""

from __future__ import annotations

import gc
import threading
import warnings
import weakref

import pytest
import torch
import torch._dynamo
from reduction_checks import assert_reduced
from torch import nn

import asymrnr_compile
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.config import AsymRnRWarning
from asymrnr_compile.runtime.steps import MAX_CALLS_PER_STEP
from asymrnr_lab.models import build_reference_model
from asymrnr_lab.sampling import SamplerConfig, sample

PRESET = "tiny"  # 2 blocks; 8 text + 32 video tokens
TINY = {"min_video_tokens": 16}
STEPS = 5


def _compile(model, backend, **kwargs):
    return torch.compile(model, backend=backend, fullgraph=True, dynamic=False, **kwargs)


def _loop(fn, inputs, steps: int = STEPS, noise: torch.Tensor | None = None) -> torch.Tensor:
    text, null_text = inputs["encoder_hidden_states"][:1], inputs["encoder_hidden_states"][1:]
    latent = inputs["hidden_states"][:1] if noise is None else noise
    with torch.no_grad():
        return sample(fn, latent, text, null_text, SamplerConfig(steps=steps))


def _runtime(backend):
    (runtime,) = [g for g in backend.graphs if hasattr(g, "state")]
    assert runtime.fallback_reason is None
    return runtime


# ------------------------------------------------------------------------------- the step signal


class _Renamed(nn.Module):
    """The reference DiT behind another timestep argument, and a timestep-named parameter used
    before the timestep (Dynamo lifts it as a graph input ahead of the argument)."""

    def __init__(self, inner: nn.Module, per_token: int = 0) -> None:
        super().__init__()
        self.inner = inner
        self.timestep_embedder = nn.Linear(1, 1)
        self.per_token = per_token

    def forward(self, hidden_states, encoder_hidden_states, sigma):
        hidden_states = hidden_states + 0.0 * self.timestep_embedder.weight.sum()
        return self.inner(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                          timestep=sigma * 1000.0)


def _sigma_call(compiled):
    def call(hidden_states, encoder_hidden_states, timestep):
        return compiled(hidden_states, encoder_hidden_states, sigma=timestep / 1000.0)
    return call


def test_a_renamed_timestep_argument_is_the_step_signal_when_named(model, inputs):
    wrapped = _Renamed(model)
    named = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, timestep_arg="sigma", **TINY))
    _loop(_sigma_call(_compile(wrapped, named)), inputs)
    runtime = _runtime(named)
    assert runtime.to_dict()["timestep_input"] and runtime.to_dict()["steps"] == STEPS
    assert runtime.matching_steps == [0, 2, 4]
    # unnamed, "sigma" is not taken for the timestep, nor is the timestep_embedder's weight:
    # without a step signal, every call is a step (2 calls per step here: split CFG is not used,
    # the sampler makes one batched call per step, so the count matches by chance of the layout)
    torch._dynamo.reset()
    unnamed = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, **TINY))
    _loop(_sigma_call(_compile(wrapped, unnamed)), inputs)
    assert not _runtime(unnamed).to_dict()["timestep_input"]


def test_a_timestep_named_parameter_is_never_the_step_signal(model, inputs):
    class EmbedderFirst(_Renamed):
        def forward(self, hidden_states, encoder_hidden_states, timestep):  # noqa: D102
            hidden_states = hidden_states + 0.0 * self.timestep_embedder.weight.sum()
            return self.inner(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                              timestep=timestep)

    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0, cache_steps=2, **TINY))
    _loop(_compile(EmbedderFirst(model), backend), inputs)
    runtime = _runtime(backend)
    assert runtime.to_dict()["steps"] == STEPS and runtime.matching_steps == [0, 2, 4]


def test_per_token_timesteps_are_read_by_their_maximum(model, inputs):
    class PerToken(nn.Module):
        """Image-to-video style: one timestep per token, the conditioning tokens at 0."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, hidden_states, encoder_hidden_states, timestep):
            return self.inner(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                              timestep=timestep.amax(dim=1))

    def call(compiled):
        def per_token(hidden_states, encoder_hidden_states, timestep):
            tokens = timestep[:, None].repeat(1, 6)
            tokens[:, :2] = 0.0  # conditioning frames
            return compiled(hidden_states, encoder_hidden_states, tokens)
        return per_token

    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0, cache_steps=2, **TINY))
    _loop(call(_compile(PerToken(), backend)), inputs)
    runtime = _runtime(backend)
    assert runtime.to_dict()["steps"] == STEPS and runtime.matching_steps == [0, 2, 4]


def test_a_python_number_timestep_is_warned_about_once_with_the_fix(model, inputs):
    class FloatTimestep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, hidden_states, encoder_hidden_states, timestep: float):
            batch = hidden_states.shape[0]
            return self.inner(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                              timestep=torch.full((batch,), timestep))

    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0, **TINY))
    compiled = _compile(FloatTimestep(), backend)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for t in (1000.0, 800.0):
            compiled(inputs["hidden_states"], inputs["encoder_hidden_states"], t)
    ours = [w for w in caught if issubclass(w.category, AsymRnRWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "'timestep' is a Python number" in str(ours[0].message)
    assert "timestep=torch.tensor([t])" in str(ours[0].message)


# ------------------------------------------------------------------------------- bounded growth


def _cached_bytes(runtime) -> int:
    total = 0
    for entry in runtime.cache.entries.values():
        tensors = [*entry.matching.values(), *(t for indices in entry.indices.values() for t in indices)]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def test_200_calls_at_one_timestep_keep_the_cache_at_a_fixed_size(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, **TINY))
    compiled = _compile(model, backend)
    sizes = []
    with torch.no_grad():
        for _ in range(200):
            compiled(**inputs)  # the same timestep every call
            runtime = _runtime(backend)
            sizes.append((len(runtime.cache.entries), _cached_bytes(runtime)))
    # at most MAX_CALLS_PER_STEP call slots x 2 sites x (q, kv), the size of the first full window
    assert sizes[-1][0] == MAX_CALLS_PER_STEP * 2 * 2
    assert len(set(sizes[MAX_CALLS_PER_STEP:])) == 1
    # only keep/restore are kept with fixed ratios (the matching is needed by schedules only)
    assert all(entry.matching == {} for entry in runtime.cache.entries.values())
    assert runtime.to_dict()["steps"] == 200 // MAX_CALLS_PER_STEP


# ------------------------------------------------------------------------------- warm-up calls


def test_a_warmup_call_at_the_first_timestep_is_warned_about_and_reset_fixes_it(model, inputs):
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=5, **TINY)
    other_noise = torch.randn_like(inputs["hidden_states"][:1])
    backend = AsymRnRBackend(config)
    compiled = _compile(model, backend)
    clean = _loop(compiled, inputs)

    backend.reset()
    with torch.no_grad():  # a user's habit: one call at the first timestep before sampling
        compiled(hidden_states=torch.cat([other_noise] * 2), encoder_hidden_states=inputs["encoder_hidden_states"],
                 timestep=torch.full((2,), 1000.0))
    with pytest.warns(AsymRnRWarning, match="warm-up call at the first timestep.*backend.reset"):
        poisoned = _loop(compiled, inputs)
    assert not torch.equal(poisoned, clean)  # steps 1 reused the warm-up input's matching

    backend.reset()
    with torch.no_grad():
        compiled(hidden_states=torch.cat([other_noise] * 2), encoder_hidden_states=inputs["encoder_hidden_states"],
                 timestep=torch.full((2,), 1000.0))
    backend.reset()  # the documented fix
    with warnings.catch_warnings():
        warnings.simplefilter("error", AsymRnRWarning)
        fixed = _loop(compiled, inputs)
    torch.testing.assert_close(fixed, clean, rtol=0, atol=0)


# ------------------------------------------------------------------------------- silent slow paths


def _warnings_of(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)]


def test_no_reduction_on_a_graph_with_attention_is_warned_about_once_with_the_fix(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5))  # tiny sites: 32 video tokens < 256
    compiled = _compile(model, backend)
    messages = _warnings_of(lambda: _loop(compiled, inputs, steps=2))
    assert len(messages) == 1 and "min_video_tokens" in messages[0] and "Fix: lower min_video_tokens" in messages[0]

    torch._dynamo.reset()
    dynamic = torch.compile(model, backend=AsymRnRBackend(AsymRnRConfig(**TINY)), fullgraph=True, dynamic=True)
    messages = _warnings_of(lambda: _loop(dynamic, inputs, steps=1))
    assert len(messages) == 1 and "dynamic=False" in messages[0]


def test_attention_without_sdpa_is_warned_about(inputs):
    class HandAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(16, 48)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v

    compiled = _compile(HandAttention(), AsymRnRBackend())
    messages = _warnings_of(lambda: compiled(torch.randn(2, 300, 16)))
    assert len(messages) == 1 and "without scaled_dot_product_attention" in messages[0]


def test_chosen_settings_and_models_without_attention_do_not_warn(model, inputs):
    zero = _compile(model, AsymRnRBackend(AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, **TINY)))
    assert _warnings_of(lambda: _loop(zero, inputs, steps=2)) == []
    torch._dynamo.reset()
    mlp = _compile(nn.Sequential(nn.Linear(8, 8), nn.GELU()), AsymRnRBackend())
    assert _warnings_of(lambda: mlp(torch.randn(3, 8))) == []


# ------------------------------------------------------------------------------- leaks and sharing


def test_string_form_backends_are_released_with_dynamo_caches(model, inputs):
    compiled = torch.compile(model, backend="asymrnr", options=dict(q_ratio=0.5, **TINY), fullgraph=True,
                             dynamic=False)
    _loop(compiled, inputs, steps=2)
    backend = weakref.ref(asymrnr_compile.last_backend())
    assert backend() is not None and backend().report().to_dict()["cache_misses"] > 0
    del compiled
    torch._dynamo.reset()
    gc.collect()
    assert backend() is None  # with it, its graphs and their cached matchings
    with pytest.raises(RuntimeError, match="torch._dynamo.reset"):
        asymrnr_compile.last_backend()


def test_string_form_option_errors_say_they_are_asymrnr_options(model, inputs):
    with pytest.raises(Exception, match=r"backend='asymrnr', options=...\): q_ratio must be in"):
        with torch.no_grad():
            torch.compile(model, backend="asymrnr", options={"q_ratio": 2.0})(**inputs)


def test_config_keywords_are_checked_like_the_options_dict():
    with pytest.raises(ValueError, match="unknown asymrnr option 'q_raito'; did you mean 'q_ratio'"):
        AsymRnRConfig(q_raito=0.5)
    with pytest.raises(ValueError, match="timestep_arg must be the name"):
        AsymRnRConfig(timestep_arg="1 + t")


def test_two_threads_sampling_two_videos_do_not_share_steps_or_matchings(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, **TINY))
    compiled = _compile(model, backend)
    noises = [torch.randn_like(inputs["hidden_states"][:1], generator=torch.Generator().manual_seed(s))
              for s in (1, 2)]
    expected = []
    for noise in noises:  # one after the other (this also compiles every variant)
        backend.reset()
        expected.append(_loop(compiled, inputs, noise=noise))
    results: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(2)

    def worker(index: int) -> None:
        barrier.wait()
        results[index] = _loop(compiled, inputs, noise=noises[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index in range(2):
        torch.testing.assert_close(results[index], expected[index], rtol=0, atol=0)
    assert_reduced(backend)


def test_report_summary_is_short_and_says_what_happened(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, **TINY))
    _loop(_compile(model, backend), inputs)
    summary = str(backend.report())
    assert summary.splitlines()[0].startswith("asymrnr: 2 of 2 attention sites reduced in 1 graph(s)")
    assert "kept tokens: kv 22 of 32, q 16 of 32" in summary
    assert "5 steps, 5 calls; matchings 12 computed, 8 reused" in summary


# ------------------------------------------------------------------------------- nn.MultiheadAttention


class _MHAVideoModel(nn.Module):
    """Self-attention over a 2x8x8 video token grid with torch's own attention module."""

    def __init__(self, need_weights: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv3d(4, 32, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.out = nn.Linear(32, 4)
        self.need_weights = need_weights
        self.eval()

    def forward(self, hidden_states, timestep):
        tokens = self.patch(hidden_states).flatten(2).transpose(1, 2) + timestep[:, None, None] / 1000.0
        attended = self.attn(tokens, tokens, tokens, need_weights=self.need_weights)[0]
        return self.out(tokens + attended)


def test_nn_multihead_attention_sites_are_reduced():
    model = _MHAVideoModel()
    latent, timestep = torch.randn(2, 4, 2, 16, 16), torch.full((2,), 500.0)
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16))
    with torch.no_grad():
        reduced = _compile(model, backend)(latent, timestep)
        torch._dynamo.reset()
        plain = _compile(model, "inductor")(latent, timestep)
        torch._dynamo.reset()
        unreduced = _compile(model, AsymRnRBackend(AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, min_video_tokens=16)))(
            latent, timestep)
    runtime = _runtime(backend)
    (site,) = runtime.to_dict()["sites"]
    assert site["kind"] == "self" and site["applied"]["q"]["kept_tokens"] == 64 and runtime.cache_misses == 2
    assert not torch.allclose(reduced, plain, atol=1e-3)  # reduced, so not the unreduced output
    torch.testing.assert_close(unreduced, plain, rtol=1e-4, atol=1e-5)  # ratio 0: plain Inductor


def test_nn_multihead_attention_with_weights_is_left_alone_and_said_so():
    compiled = _compile(_MHAVideoModel(need_weights=True), AsymRnRBackend(AsymRnRConfig(min_video_tokens=16)))
    with torch.no_grad():
        messages = _warnings_of(lambda: compiled(torch.randn(2, 4, 2, 16, 16), torch.full((2,), 500.0)))
    assert len(messages) == 1 and "need_weights=True" in messages[0]
    assert "Fix: call nn.MultiheadAttention with need_weights=False" in messages[0]


def test_ltx_video_with_per_token_timesteps_counts_its_steps():
    """LTX-Video's image-to-video pipeline passes one timestep per token, the conditioning
    frame's tokens at 0: the step must follow the noised tokens' timestep."""
    pytest.importorskip("diffusers")
    from asymrnr_lab.models.diffusers_models import build

    model, inputs = build("ltx")  # 512 tokens = 2 frames x 16 x 16
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0, cache_steps=2, dst_stride=(1, 2, 2),
                                           min_video_tokens=16))
    compiled = _compile(model, backend)
    with torch.no_grad():
        for t in torch.linspace(1000.0, 200.0, STEPS):
            timestep = torch.full((2, 512), float(t))
            timestep[:, :256] = 0.0  # the conditioning frame
            compiled(**{**inputs, "timestep": timestep}, return_dict=False)
    runtime = _runtime(backend)
    assert runtime.to_dict()["steps"] == STEPS and runtime.matching_steps == [0, 2, 4]


def test_text_only_sites_do_not_make_a_chosen_setting_warn():
    """HunyuanVideo's token refiner is text-only attention: with ratios 0 nothing is wrong."""
    pytest.importorskip("diffusers")
    from asymrnr_lab.models.diffusers_models import build

    model, inputs = build("hunyuan")
    for stride in ((1, 2, 2), (2, 2, 2)):  # the tiny grid has one frame: (2, 2, 2) leaves no destination
        torch._dynamo.reset()
        config = AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, dst_stride=stride, min_video_tokens=16)
        compiled = _compile(model, AsymRnRBackend(config))
        with torch.no_grad():
            assert _warnings_of(lambda fn=compiled: fn(**inputs, return_dict=False)) == [], stride


# ------------------------------------------------------------------------ recompiles mid-video


class _Flagged(nn.Module):
    """The model behind a Python flag Dynamo guards on: flipping it recompiles, the math stays."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.flag = False

    def forward(self, hidden_states, encoder_hidden_states, timestep):
        out = self.inner(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, timestep=timestep)
        return out * 1.0 if self.flag else out


def test_a_recompile_mid_video_continues_its_steps_and_matchings(model, inputs):
    """Before the fix, the graph Dynamo compiled after a guard failed had a runtime of its own,
    which took the next step for step 0 of a new video and computed a matching there."""
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=STEPS, **TINY)
    flagged = _Flagged(model)
    steady = AsymRnRBackend(config)
    expected = _loop(_compile(flagged, steady), inputs)
    torch._dynamo.reset()

    backend = AsymRnRBackend(config)
    compiled = _compile(flagged, backend)
    calls = []

    def flip_after_two_steps(**kwargs):
        calls.append(1)
        flagged.flag = len(calls) > 2
        return compiled(**kwargs)

    try:
        got = _loop(flip_after_two_steps, inputs)
    finally:
        flagged.flag = False
    runtimes = [g for g in backend.graphs if hasattr(g, "state")]
    assert len(runtimes) == 2, "flipping the flag should have recompiled"
    first, second = (runtime.to_dict() for runtime in runtimes)
    assert (first["calls"], second["calls"]) == (2, STEPS - 2)
    assert not first["continues_earlier_compile"] and second["continues_earlier_compile"]
    steady_misses = steady.report().to_dict()["cache_misses"]
    assert steady_misses == 4  # 2 sites x (q, kv), once
    assert backend.report().to_dict()["cache_misses"] == steady_misses  # the recompile matched nothing again
    assert backend.report().to_dict()["steps"] == STEPS
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ------------------------------------------------------- two models of one class in one process


def _two_expert_loop(first, second, inputs, switch_after: int) -> torch.Tensor:
    """A sampling loop whose first ``switch_after`` calls go to ``first`` and the rest to
    ``second`` (how Wan 2.2's pipeline hands the low-noise steps to ``transformer_2``)."""
    calls = {"n": 0}

    def experts(**kwargs):
        calls["n"] += 1
        return (first if calls["n"] <= switch_after else second)(**kwargs)

    return _loop(experts, inputs)


def test_a_second_model_of_the_same_class_keeps_matchings_of_its_own(inputs):
    """Dynamo keeps compiled code per code object, and two ``backend="asymrnr"`` compiles with
    equal options compare equal: the second model (same class, other weights) passes the first's
    guards and runs the first's graph and runtime. Before the runtime kept a video state per
    model (keyed by the weights coming in), the second model reused the first one's matching
    after a switch in the middle of a matching window. Now the loop equals the one with a backend
    object per model bit for bit, shared graph or isolated (``isolate_recompiles=True``)."""
    first, second = (build_reference_model(PRESET, seed=seed) for seed in (0, 1))
    options = {"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, **TINY}
    switch = 2  # step 2 opens a matching window (cache 2): step 3, the second model's first, reuses

    def string_form(served: list[AsymRnRBackend], **kwargs):
        """Both models compiled with backend="asymrnr"; ``served`` collects the string-form
        backend that served each call (``last_backend()`` after it), in order, without repeats."""

        def tracked(compiled):
            def call(**call_kwargs):
                output = compiled(**call_kwargs)
                backend = asymrnr_compile.last_backend()
                if not any(backend is seen for seen in served):
                    served.append(backend)
                return output
            return call

        return [tracked(_compile(m, "asymrnr", options=dict(options), **kwargs)) for m in (first, second)]

    backends = [AsymRnRBackend(AsymRnRConfig(**options)) for _ in (first, second)]
    separate = _two_expert_loop(*(_compile(m, b) for m, b in zip((first, second), backends)),
                                inputs, switch_after=switch + 1)
    for backend in backends:  # the reference reduced: each model with matchings of its own
        assert_reduced(backend)
    torch._dynamo.reset()
    served: list[AsymRnRBackend] = []
    shared = _two_expert_loop(*string_form(served), inputs, switch_after=switch + 1)
    assert len(served) == 1 and served[0] is asymrnr_compile.last_backend()  # one graph served both models
    runtime = _runtime(asymrnr_compile.last_backend())
    assert len(runtime.video_states.all()) == 2
    assert_reduced(asymrnr_compile.last_backend())
    torch.testing.assert_close(shared, separate, rtol=0, atol=0)
    torch._dynamo.reset()
    served = []
    isolated = _two_expert_loop(*string_form(served, isolate_recompiles=True), inputs, switch_after=switch + 1)
    assert len(served) == 2  # a graph (and string-form backend) per model
    for backend in served:
        assert_reduced(backend)
    torch.testing.assert_close(isolated, separate, rtol=0, atol=0)


def _recreate_parameters(module: nn.Module) -> None:
    """What accelerate's sequential CPU offload does around every call: every parameter is
    replaced by a new ``Parameter`` object (here with the same values)."""
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is not None:
                submodule._parameters[name] = nn.Parameter(parameter.detach().clone(), requires_grad=False)


def test_parameters_recreated_for_every_call_keep_the_video_going(inputs):
    """The runtime knows a model by its first parameter object. Offloading hooks that re-create
    the parameters for every call must not make every call a new video (step 0, a new matching
    each time): the new object takes over the state of the one that is gone, and the loop equals
    the one with stable parameters bit for bit, with the same cache hits."""
    options = {"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, **TINY}
    results = {}
    for recreated in (False, True):
        torch._dynamo.reset()
        model = build_reference_model(PRESET, seed=0)
        backend = AsymRnRBackend(AsymRnRConfig(**options))
        compiled = _compile(model, backend)

        def call(model=model, compiled=compiled, recreated=recreated, **kwargs):
            if recreated:
                _recreate_parameters(model)
            return compiled(**kwargs)

        output = _loop(call, inputs)
        report = backend.report().to_dict()
        results[recreated] = output, report["cache_hits"], report["steps"]
    torch._dynamo.reset()
    stable, recreated = results[False], results[True]
    assert stable[1] > 0 and stable[2] == STEPS
    assert (recreated[1], recreated[2]) == (stable[1], stable[2])
    torch.testing.assert_close(recreated[0], stable[0], rtol=0, atol=0)
