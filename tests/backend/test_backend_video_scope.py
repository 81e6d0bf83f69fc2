"""Video scopes through the backend: the same video as a clean run, whatever surrounds it.

Inside ``with asymrnr_compile.video():`` (or ``backend.video()``) the steps and matchings belong
to that one video: a warm-up call before it, another video sampled at the same time in another
asyncio task or thread, or ``torch._dynamo.reset()`` between videos change nothing, bit for bit.
Every test also proves that the loop was reduced (``assert_reduced``), so none of them passes
by the rewrite falling back.
"""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest
import torch
import torch._dynamo
from reduction_checks import assert_reduced

import asymrnr_compile
from asymrnr_compile import AsymRnRBackend
from asymrnr_compile.config import AsymRnRWarning
from asymrnr_lab.models import build_reference_model
from asymrnr_lab.sampling import SamplerConfig, euler_cfg_step

STEPS = 5
OPTIONS = {"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, "min_video_tokens": 16}


def _compile(model, backend, **kwargs):
    return torch.compile(model, backend=backend, fullgraph=True, dynamic=False, **kwargs)


def _noise(inputs, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(inputs["hidden_states"][:1].shape, generator=generator)


def _steps(fn, inputs, noise):
    """The sampling loop as a generator: yields after every step, returns the final latent."""
    text, null_text = inputs["encoder_hidden_states"][:1], inputs["encoder_hidden_states"][1:]
    config = SamplerConfig(steps=STEPS)
    x = noise
    for step in range(config.steps):
        # no_grad per step, never across a yield: grad mode is per thread, and two interleaved
        # generators holding it across yields would restore each other's state out of order
        with torch.no_grad():
            x = euler_cfg_step(fn, x, step, text, null_text, config)
        yield
    return x


def _video(fn, inputs, noise, scoped: bool = True) -> torch.Tensor:
    """One whole video, in its own scope."""
    steps = _steps(fn, inputs, noise)
    with asymrnr_compile.video(num_steps=STEPS) if scoped else _no_scope():
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value


class _no_scope:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _clean(model, inputs, seeds) -> list[torch.Tensor]:
    """Each seed's video with a fresh backend and fresh Dynamo, in a scope."""
    out = []
    for seed in seeds:
        torch._dynamo.reset()
        backend = AsymRnRBackend(**OPTIONS)
        out.append(_video(_compile(model, backend), inputs, _noise(inputs, seed)))
        assert_reduced(backend)
    torch._dynamo.reset()
    return out


def test_a_scoped_video_equals_the_same_video_without_a_scope(model, inputs):
    """The scope reads the same steps from the timestep as the fallback does on a clean run."""
    backend = AsymRnRBackend(**OPTIONS)
    scoped = _video(_compile(model, backend), inputs, _noise(inputs, 0))
    assert_reduced(backend)
    assert backend.report().to_dict()["steps"] == STEPS
    torch._dynamo.reset()
    unscoped_backend = AsymRnRBackend(**OPTIONS)
    unscoped = _video(_compile(model, unscoped_backend), inputs, _noise(inputs, 0), scoped=False)
    torch.testing.assert_close(scoped, unscoped, rtol=0, atol=0)


def test_a_warm_up_call_before_the_scope_leaves_the_video_bit_for_bit_clean(model, inputs):
    """A warm-up call at the first timestep, without reset(): outside a scope the backend can
    only guess that the call was not part of the video (it warns and recomputes from step 2, and
    the video differs); the scoped video starts clean and equals a clean run."""
    (clean,) = _clean(model, inputs, [0])
    backend = AsymRnRBackend(**OPTIONS)
    compiled = _compile(model, backend)
    text = inputs["encoder_hidden_states"][:1]
    with torch.no_grad():
        compiled(hidden_states=_noise(inputs, 5), encoder_hidden_states=text, timestep=torch.tensor([1000.0]))
    warmed = _video(compiled, inputs, _noise(inputs, 0))
    assert_reduced(backend)
    torch.testing.assert_close(warmed, clean, rtol=0, atol=0)


def test_two_videos_in_two_asyncio_tasks_equal_their_sequential_runs(model, inputs):
    """Two tasks in one thread, their steps interleaved: each task's scope (a context variable
    follows its task) keeps its own steps and matchings."""
    expected = _clean(model, inputs, [0, 1])
    backend = AsymRnRBackend(**OPTIONS)
    compiled = _compile(model, backend)
    order: list[int] = []

    async def one_video(seed: int) -> torch.Tensor:
        steps = _steps(compiled, inputs, _noise(inputs, seed))
        with asymrnr_compile.video():
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value
                order.append(seed)
                await asyncio.sleep(0)  # the other task runs its step now

    async def both() -> list[torch.Tensor]:
        return list(await asyncio.gather(one_video(0), one_video(1)))

    got = asyncio.run(both())
    assert_reduced(backend)
    assert order[:4] == [0, 1, 0, 1]  # the steps really interleaved
    for video, want in zip(got, expected, strict=True):
        torch.testing.assert_close(video, want, rtol=0, atol=0)


def test_two_videos_in_two_threads_equal_their_sequential_runs(model, inputs):
    expected = _clean(model, inputs, [0, 1])
    backend = AsymRnRBackend(**OPTIONS)
    compiled = _compile(model, backend)
    _video(compiled, inputs, _noise(inputs, 2))  # compile every variant before the threads start
    got: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(2)

    def one_video(seed: int) -> None:
        steps = _steps(compiled, inputs, _noise(inputs, seed))
        with asymrnr_compile.video():
            while True:
                barrier.wait()  # step in lockstep with the other thread
                try:
                    next(steps)
                except StopIteration as done:
                    got[seed] = done.value
                    return

    threads = [threading.Thread(target=one_video, args=(seed,)) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_reduced(backend)
    for seed, want in enumerate(expected):
        torch.testing.assert_close(got[seed], want, rtol=0, atol=0)


def test_dynamo_reset_between_videos_leaves_no_state_behind(model, inputs):
    """A backend object reused across ``torch._dynamo.reset()``: the new compile of the same
    code starts its own steps and matchings (Dynamo's frame ids restart at 0 after a reset, so
    they cannot tell a recompile from a new compile; the code object's live cache entries can)."""
    expected = _clean(model, inputs, [1])
    backend = AsymRnRBackend(**OPTIONS)
    _video(_compile(model, backend), inputs, _noise(inputs, 0), scoped=False)
    old = backend.graphs[-1]
    torch._dynamo.reset()
    second = _video(_compile(model, backend), inputs, _noise(inputs, 1), scoped=False)
    new = backend.graphs[-1]
    assert new is not old and new.video_states is not old.video_states
    assert not new.to_dict()["continues_earlier_compile"]
    (states_of_code,) = [held for held in backend._video_states.values()]
    assert list(states_of_code.values()) == [new.video_states]  # the old video's states are gone
    torch.testing.assert_close(second, expected[0], rtol=0, atol=0)
    assert_reduced(backend)


def test_parameters_recreated_for_every_call_continue_the_scoped_video(inputs):
    """Inside a scope a model is known by its first parameter object, held weakly. Offloading
    hooks that re-create every parameter for every call (accelerate's sequential CPU offload)
    must not make each call a model of its own with a new matching: the new object takes over
    the state of the one that is gone, and the video equals the one with stable parameters bit
    for bit, with the same matchings computed and reused."""
    results = {}
    for recreated in (False, True):
        torch._dynamo.reset()
        model = build_reference_model("tiny", seed=0)
        backend = AsymRnRBackend(**OPTIONS)
        compiled = _compile(model, backend)

        def call(model=model, compiled=compiled, recreated=recreated, **kwargs):
            if recreated:
                for submodule in model.modules():
                    for name, parameter in list(submodule._parameters.items()):
                        if parameter is not None:
                            submodule._parameters[name] = torch.nn.Parameter(parameter.detach().clone(),
                                                                             requires_grad=False)
            return compiled(**kwargs)

        output = _video(call, inputs, _noise(inputs, 0))
        report = assert_reduced(backend)
        results[recreated] = output, report["cache_hits"], report["cache_misses"]
    stable, recreated = results[False], results[True]
    assert stable[1] > 0
    assert recreated[1:] == stable[1:]
    torch.testing.assert_close(recreated[0], stable[0], rtol=0, atol=0)


def test_a_recompile_without_a_scope_still_continues_its_video(model, inputs):
    """What the code-object key keeps: a guard failure mid-video (here a new input stride)
    recompiles, and the new graph continues the video's steps and matchings."""
    backend = AsymRnRBackend(**OPTIONS)
    compiled = _compile(model, backend)
    calls = {"n": 0}

    def strided_after_two_calls(**kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # same values, another memory layout: Dynamo recompiles
            kwargs["hidden_states"] = kwargs["hidden_states"].transpose(-1, -2).contiguous().transpose(-1, -2)
        return compiled(**kwargs)

    _video(strided_after_two_calls, inputs, _noise(inputs, 0), scoped=False)
    assert len(backend.graphs) == 2
    assert backend.graphs[1].to_dict()["continues_earlier_compile"]
    assert backend.graphs[1].video_states is backend.graphs[0].video_states
    assert_reduced(backend)


#: A config patch every compile_fx call of ``runtime.compile_subgraphs.inductor_compiler`` carries.
SUBGRAPH_MARKER = "unsafe_marked_cacheable_functions"


def test_cuda_graph_modes_compile_the_reduced_graphs_without_cuda_graphs(model, inputs, monkeypatch):
    """``mode="reduce-overhead"`` asks Inductor for CUDA graphs, whose memory reuse would
    overwrite the matchings kept across steps: the reduced graphs compile without them (the
    mode's other options kept) and the backend says so once."""
    import torch._inductor.compile_fx as compile_fx_module

    patches_seen: list[dict] = []
    real = compile_fx_module.compile_fx

    def recording(*args, **kwargs):
        patches_seen.append(dict(kwargs.get("config_patches") or {}))
        return real(*args, **kwargs)

    monkeypatch.setattr(compile_fx_module, "compile_fx", recording)
    backend = AsymRnRBackend(**OPTIONS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _video(_compile(model, backend, mode="reduce-overhead"), inputs, _noise(inputs, 0))
    assert_reduced(backend)
    messages = [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)]
    assert sum("without CUDA graphs" in m for m in messages) == 1
    # the subgraphs' compile_fx calls (those marking this package's ops cacheable) carry the mode's
    # options with CUDA graphs turned off; Inductor's own nested calls pass other patches
    subgraph_patches = [p for p in patches_seen if SUBGRAPH_MARKER in p]
    assert subgraph_patches and all(p.get("triton.cudagraphs") is False for p in subgraph_patches)
    patches_seen.clear()
    torch._dynamo.reset()
    backend = AsymRnRBackend(**OPTIONS)
    _video(_compile(model, backend, mode="max-autotune-no-cudagraphs"), inputs, _noise(inputs, 0))
    subgraph_patches = [p for p in patches_seen if SUBGRAPH_MARKER in p]
    assert subgraph_patches and all(p.get("max_autotune") for p in subgraph_patches)


def test_a_scope_declares_the_step_and_rejects_bad_values(model, inputs):
    """``set_step`` makes the loop's step the video's: matchings at the windows' first steps
    (cache 2: steps 0, 2, 4) even when the timestep does not change between steps."""
    backend = AsymRnRBackend(**OPTIONS)
    compiled = _compile(model, backend)
    text = inputs["encoder_hidden_states"][:1]
    x = _noise(inputs, 0)
    records = []
    backend.on_matching = records.append
    with torch.no_grad(), backend.video(num_steps=STEPS) as scope:
        for step in range(STEPS):
            scope.set_step(step)
            compiled(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([500.0]))
    assert_reduced(backend)
    assert sorted({r.step for r in records}) == [0, 2, 4]
    with asymrnr_compile.video() as scope:
        for bad in (-1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="step must be an int >= 0"):
                scope.set_step(bad)
    with pytest.raises(ValueError, match="num_steps must be an int >= 1 or None"):
        with asymrnr_compile.video(num_steps=0):
            pass
