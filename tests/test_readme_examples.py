"""Every ```python block of README.md runs as written.

Each block runs with ``exec`` in a fresh namespace (so it must do its own imports), in a temporary
working directory, after ``torch._dynamo.reset()``, with what it prints captured. The exceptions
are few and stated:

- a block right after an HTML comment ``<!-- not run: REASON -->`` is not run (it needs a GPU,
  downloaded weights or a long run); the reason must be given;
- a block outside the "Use" section that continues an example and uses names it does not define
  gets exactly those names from :data:`PRELUDES` (stated here, tiny sizes), and nothing else.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch
import torch._dynamo

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*\n```python\n")
BLOCK = re.compile(r"```python\n(?P<code>.*?)```", flags=re.S)

# Names some README blocks take from the text around them, keyed by a line of the block.
PRELUDES: dict[str, str] = {
    # "Profiling, schedules, calibrate": `transformer` and `my_sampling_loop` are the reader's
    # model and loop; here the reference DiT at its "tiny" width on a 4 x 32 x 32 latent (1024 video
    # tokens: the default min_video_tokens) and a 2-step loop.
    "prof = asymrnr_compile.profile(transformer": """
import dataclasses
import torch
from asymrnr_compile.models import PRESETS, build_reference_model, reference_inputs
from asymrnr_compile.sampling import SamplerConfig, sample
_config = dataclasses.replace(PRESETS["tiny"], latent_frames=4, latent_height=32, latent_width=32)
transformer = build_reference_model(_config)
_inputs = reference_inputs(_config, batch_size=1)
def my_sampling_loop(m):
    text = _inputs["encoder_hidden_states"]
    with torch.no_grad():
        return sample(m, _inputs["hidden_states"], text, torch.zeros_like(text), SamplerConfig(steps=2))
""",
    # "The trained text-to-video model": `model` is the reader's transformer.
    'torch.compile(model, backend="asymrnr", options={': """
import torch
from asymrnr_compile.models import build_reference_model
model = build_reference_model("tiny")
""",
}


def readme_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, reason not run or None)`` of every ```python block of ``text``."""
    skipped = {match.end() - len("```python\n"): match.group("reason") for match in NOT_RUN.finditer(text)}
    return [(text.count("\n", 0, match.start()) + 1, match.group("code"), skipped.get(match.start()))
            for match in BLOCK.finditer(text)]


def _prelude(code: str) -> str:
    return "".join(prelude for key, prelude in PRELUDES.items() if key in code)


BLOCKS = readme_blocks(README.read_text())


def test_the_readme_has_runnable_python_blocks_and_few_exceptions():
    assert len(BLOCKS) >= 4
    not_run = [reason for _, _, reason in BLOCKS if reason is not None]
    assert all(reason for reason in not_run), "a `not run` block must say why"
    assert len(not_run) <= 2, f"keep the not-run blocks few: {not_run}"
    assert len([code for _, code, reason in BLOCKS if reason is None]) >= 3
    # every prelude is used by a block: a renamed block must not leave a dead exception behind
    for key in PRELUDES:
        assert any(key in code for _, code, _ in BLOCKS), f"no README block contains {key!r}"


def test_readme_blocks_and_markers_are_found():
    text = "a\n<!-- not run: needs a GPU -->\n```python\nx = 1\n```\nb\n```python\ny = 2\n```\n"
    assert readme_blocks(text) == [(3, "x = 1\n", "needs a GPU"), (7, "y = 2\n", None)]


def run_block(code: str) -> dict:
    """Run ``code`` (after its prelude, if any) in a fresh namespace in the current directory; returns
    the namespace (``"__printed__"``: what it printed)."""
    torch._dynamo.reset()
    out = io.StringIO()
    namespace: dict = {"__name__": "__readme__"}
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(_prelude(code), "<README prelude>", "exec"), namespace)
            exec(compile(code, "<README block>", "exec"), namespace)
    finally:
        torch._dynamo.reset()
    namespace["__printed__"] = out.getvalue()
    return namespace


def test_a_failing_block_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NameError):
        run_block("print(transformer_that_is_not_defined)\n")


RUN = [(line, code) for line, code, reason in BLOCKS if reason is None]


@pytest.mark.parametrize("line, code", RUN, ids=[f"README.md:{line}" for line, _ in RUN])
def test_readme_python_block_runs(line, code, tmp_path, monkeypatch):
    import asymrnr_compile
    from asymrnr_compile import AsymRnRBackend

    monkeypatch.chdir(tmp_path)
    namespace = run_block(code)
    # the Use examples sample under asymrnr and print its report: it must have reduced something
    backend = namespace.get("backend")
    if not isinstance(backend, AsymRnRBackend) and "last_backend()" in code:
        backend = asymrnr_compile.last_backend()
    if isinstance(backend, AsymRnRBackend) and "report()" in code:
        report = backend.report().to_dict()
        assert report["cache_misses"] > 0 and report["num_variants"] > 0, report
        assert namespace["__printed__"].strip()
