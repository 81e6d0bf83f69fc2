"""The README's pipeline example, offline.

The README's "Use" section opens with a diffusers pipeline block that needs downloaded weights and
a GPU, so ``tests/test_readme_examples.py`` does not run it (``<!-- not run: ... -->``). Here its
compile line (``pipe.transformer = torch.compile(pipe.transformer, backend="asymrnr", ...)``) is
taken from the README as written and run on a tiny offline CogVideoX pipeline
(:func:`asymrnr_compile.models.diffusers_pipelines.tiny_pipeline`) at 256 x 256 px, whose 768
video tokens clear the default ``min_video_tokens`` (256) that the README's options keep.
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

README = Path(__file__).resolve().parents[2] / "README.md"


def _pipeline_block() -> str:
    text = README.read_text()
    use = text.index("## Use")
    blocks = [(line, code, reason) for line, code, reason in readme_blocks(text)]
    first_in_use = next(code for line, code, _ in blocks if line > text.count("\n", 0, use))
    assert "from_pretrained" in first_in_use, "the Use section must start with the pipeline form"
    return first_in_use


def _compile_statement(code: str) -> str:
    """The block's ``pipe.transformer = torch.compile(...)`` statement, as written."""
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "pipe.transformer":
            return ast.get_source_segment(code, node)
    raise AssertionError("the README pipeline block has no `pipe.transformer = torch.compile(...)` line")


def test_the_use_section_starts_with_a_pipeline_block_that_compiles_with_asymrnr():
    code = _pipeline_block()
    statement = _compile_statement(code)
    call = ast.parse(statement).body[0].value
    assert ast.unparse(call.func) == "torch.compile"
    keywords = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    assert keywords["backend"] == "asymrnr" and keywords["dynamic"] is False
    asymrnr_compile.AsymRnRConfig.from_options(keywords["options"])  # valid options
    assert ".frames[0]" in code  # the call, after the load and the compile line


@pytest.mark.slow
def test_the_readme_compile_line_runs_on_a_tiny_offline_pipeline():
    from asymrnr_compile.models.diffusers_pipelines import tiny_pipeline

    torch._dynamo.reset()
    tiny = tiny_pipeline("cogvideox", size=256, num_frames=9, steps=3)  # 3 x 16 x 16 video tokens
    namespace = {"torch": torch, "pipe": tiny.pipe}
    exec(compile(_compile_statement(_pipeline_block()), "<README pipeline block>", "exec"), namespace)
    try:
        frames = tiny(seed=0)
        assert frames.shape == (9, 3, 256, 256) and torch.isfinite(frames).all()
        report = asymrnr_compile.last_backend().report().to_dict()
        sites = [site for graph in report["graphs"] for site in graph["sites"] if site["video_tokens"]]
        assert sites and all(site.get("applied") for site in sites), report
        assert (report["steps"], report["calls"]) == (3, 3) and report["cache_misses"] > 0
    finally:
        torch._dynamo.reset()
