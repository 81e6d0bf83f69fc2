"""The documents' pipeline examples, offline.

The README's pipeline example (``asymrnr_compile.enable_asymrnr(pipe, {...})``) and docs/usage.md's
"compiling the transformer yourself" need downloaded weights and a GPU, so
``tests/test_readme_examples.py`` does not run them (``<!-- not run: ... -->``). Here the README's
options are validated, and docs/usage.md's compile line
(``pipe.transformer = torch.compile(pipe.transformer, backend="asymrnr", ...)``) is taken as
written and run on a tiny offline CogVideoX pipeline
(:func:`asymrnr_lab.models.diffusers_pipelines.tiny_pipeline`) at 256 x 256 px and 13 frames,
whose 1024 video tokens reach the default ``min_video_tokens`` (1024).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch._dynamo

import asymrnr_compile

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
pytest.importorskip("transformers", reason="the diffusers pipelines import transformers (pip install -e .[diffusers])")

from test_readme_examples import readme_blocks  # noqa: E402  (tests/ is on the path)

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
USAGE = ROOT / "docs" / "usage.md"


def _pipeline_block() -> str:
    """docs/usage.md's block that compiles a pipeline's transformer with ``torch.compile``."""
    blocks = [code for _, code, _ in readme_blocks(USAGE.read_text()) if "pipe.transformer = torch.compile" in code]
    assert len(blocks) == 1, "docs/usage.md must have one block that compiles pipe.transformer"
    assert "from_pretrained" in blocks[0]
    return blocks[0]


def test_the_readme_pipeline_example_enables_asymrnr_with_valid_options():
    code = next(code for _, code, _ in readme_blocks(README.read_text()) if "from_pretrained" in code)
    calls = [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)
             and ast.unparse(node.func) == "asymrnr_compile.enable_asymrnr"]
    assert len(calls) == 1 and ast.unparse(calls[0].args[0]) == "pipe"
    asymrnr_compile.AsymRnRConfig.from_options(ast.literal_eval(calls[0].args[1]))  # valid options
    assert ".frames[0]" in code and "backend.report()" in code


def _compile_statement(code: str) -> str:
    """The block's ``pipe.transformer = torch.compile(...)`` statement, as written."""
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "pipe.transformer":
            return ast.get_source_segment(code, node)
    raise AssertionError("the docs/usage.md pipeline block has no `pipe.transformer = torch.compile(...)` line")


def test_the_usage_pipeline_block_compiles_with_asymrnr():
    code = _pipeline_block()
    statement = _compile_statement(code)
    call = ast.parse(statement).body[0].value
    assert ast.unparse(call.func) == "torch.compile"
    keywords = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    assert keywords["backend"] == "asymrnr" and keywords["dynamic"] is False
    asymrnr_compile.AsymRnRConfig.from_options(keywords["options"])  # valid options
    assert ".frames[0]" in code  # the call, after the load and the compile line


@pytest.mark.slow
def test_the_usage_compile_line_runs_on_a_tiny_offline_pipeline():
    from asymrnr_lab.models.diffusers_pipelines import tiny_pipeline

    torch._dynamo.reset()
    tiny = tiny_pipeline("cogvideox", size=256, num_frames=13, steps=3)  # 4 x 16 x 16 video tokens
    namespace = {"torch": torch, "pipe": tiny.pipe}
    exec(compile(_compile_statement(_pipeline_block()), "<docs/usage.md pipeline block>", "exec"), namespace)
    try:
        frames = tiny(seed=0)
        assert frames.shape[1:] == (3, 256, 256) and torch.isfinite(frames).all()
        report = asymrnr_compile.last_backend().report().to_dict()
        sites = [site for graph in report["graphs"] for site in graph["sites"] if site["video_tokens"]]
        assert sites and all(site.get("applied") for site in sites), report
        assert (report["steps"], report["calls"]) == (3, 3) and report["cache_misses"] > 0
    finally:
        torch._dynamo.reset()
