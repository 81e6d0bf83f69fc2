"""Every ```python block of README.md and of the usage documents runs as written.

Each block runs with ``exec`` in a fresh namespace (so it must do its own imports: no names are
given to it), in a temporary working directory, after ``torch._dynamo.reset()``, with what it
prints captured. The one exception: a block right after an HTML comment
``<!-- not run: REASON -->`` is not run, because it needs downloaded weights or a GPU; the reason
must say so.
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
#: The documents whose blocks run: the README and the new users' pages next to it.
DOCUMENTS = [README] + [ROOT / "docs" / name for name in ("usage.md", "options.md", "profiling.md", "quality.md")]

NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*\n```python\n")
BLOCK = re.compile(r"```python\n(?P<code>.*?)```", flags=re.S)
#: What a reason for not running a block may be.
ALLOWED_REASON = re.compile(r"downloaded|weights|GPU|CUDA", flags=re.I)


def readme_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, reason not run or None)`` of every ```python block of ``text``."""
    skipped = {match.end() - len("```python\n"): match.group("reason") for match in NOT_RUN.finditer(text)}
    return [(text.count("\n", 0, match.start()) + 1, match.group("code"), skipped.get(match.start()))
            for match in BLOCK.finditer(text)]


BLOCKS = [(path, line, code, reason) for path in DOCUMENTS for line, code, reason in readme_blocks(path.read_text())]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_readme_has_runnable_python_blocks_and_few_exceptions():
    readme = [(code, reason) for path, _, code, reason in BLOCKS if path == README]
    assert len([code for code, reason in readme if reason is None]) >= 1
    assert len([reason for _, reason in readme if reason is not None]) <= 1
    # the README's custom loop runs inside a video scope on the bundled tiny model
    assert any("asymrnr_compile.video(num_steps=" in code and 'build_reference_model("tiny")' in code
               for code, reason in readme if reason is None)
    # its pipeline example is enable_asymrnr, marked not run
    assert any("asymrnr_compile.enable_asymrnr(pipe" in code for code, reason in readme if reason is not None)


def test_every_block_not_run_says_it_needs_weights_or_a_gpu():
    for path, line, _, reason in BLOCKS:
        if reason is not None:
            assert ALLOWED_REASON.search(reason), f"{_name(path)}:{line}: not run for {reason!r}"


def test_readme_blocks_and_markers_are_found():
    text = "a\n<!-- not run: needs a GPU -->\n```python\nx = 1\n```\nb\n```python\ny = 2\n```\n"
    assert readme_blocks(text) == [(3, "x = 1\n", "needs a GPU"), (7, "y = 2\n", None)]


def run_block(code: str) -> dict:
    """Run ``code`` in a fresh namespace in the current directory; returns the namespace
    (``"__printed__"``: what it printed)."""
    torch._dynamo.reset()
    out = io.StringIO()
    namespace: dict = {"__name__": "__readme__"}
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<README block>", "exec"), namespace)
    finally:
        torch._dynamo.reset()
    namespace["__printed__"] = out.getvalue()
    return namespace


def test_a_failing_block_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NameError):
        run_block("print(transformer_that_is_not_defined)\n")


RUN = [(path, line, code) for path, line, code, reason in BLOCKS if reason is None]


@pytest.mark.parametrize("path, line, code", RUN, ids=[f"{_name(path)}:{line}" for path, line, _ in RUN])
def test_readme_python_block_runs(path, line, code, tmp_path, monkeypatch):
    import asymrnr_compile
    from asymrnr_compile import AsymRnRBackend

    monkeypatch.chdir(tmp_path)
    namespace = run_block(code)
    # a block that samples under asymrnr and prints its report must have reduced something
    backend = namespace.get("backend")
    if not isinstance(backend, AsymRnRBackend) and "last_backend()" in code:
        backend = asymrnr_compile.last_backend()
    if isinstance(backend, AsymRnRBackend) and "report()" in code:
        report = backend.report().to_dict()
        assert report["cache_misses"] > 0 and report["num_variants"] > 0, report
        assert namespace["__printed__"].strip()
