"""The README's two set-up commands stay in step with CI, and the documents with the code: the
options table lists every config field, docs/cli.md is the parsers' help, and every command-line
flag the README names exists."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The documents written for users besides the README whose `asymrnr-compile ...` commands are
#: checked against the parsers (docs/cli.md is the parsers' own text).
COMMAND_DOCS = [ROOT / "docs" / name for name in ("usage.md", "options.md", "profiling.md", "quality.md",
                                                  "development.md")]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_starts_with_the_demo_and_test_commands_and_ci_runs_the_latter():
    readme = README.read_text()
    demo, tests = _bash_blocks(readme)[:2]
    assert demo.endswith("asymrnr-compile demo") and demo.startswith("pip install torch==2.13.0")
    assert "pytest" in tests and tests.startswith("pip install torch==2.13.0")
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci_lines == [tests]


def test_options_table_lists_every_config_field():
    from asymrnr_compile.config import AsymRnRConfig

    options = (ROOT / "docs" / "options.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", options, flags=re.M))
    fields = set(AsymRnRConfig.option_names())
    assert fields <= documented, f"undocumented options: {sorted(fields - documented)}"
    assert "docs/options.md" in README.read_text()


def test_docs_cli_md_is_the_help_of_the_parsers():
    from asymrnr_lab.cli.reference import render

    assert (ROOT / "docs" / "cli.md").read_text() == render(), \
        "docs/cli.md is stale: python -m asymrnr_lab.cli.reference > docs/cli.md"


# --- command-line flags named in the documents -------------------------------------------------

def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from asymrnr_lab.cli import build_parser
    from asymrnr_lab.cli.reference import subcommands

    parser = build_parser()
    return parser, subcommands(parser)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _code_snippets(text: str) -> list[str]:
    """Inline code spans (they may wrap a line) and the lines of fenced bash blocks."""
    spans = re.findall(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)*)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    lines = [line for block in _bash_blocks(text) for line in block.splitlines()]
    return [" ".join(snippet.split()) for snippet in spans + lines]


def _command_flags(snippet: str) -> tuple[str | None, list[str]] | None:
    """``(subcommand or None, --flags)`` of an ``asymrnr-compile ...`` snippet, else None."""
    parts = [part for command in snippet.split("&&") for part in [command.strip()]
             if part.startswith("asymrnr-compile")]
    if not parts:
        return None
    tokens = shlex.split(parts[0])
    sub = tokens[1] if len(tokens) > 1 and not tokens[1].startswith("-") else None
    return sub, [token.split("=")[0] for token in tokens if token.startswith("--")]


def _check_commands(text: str, name: str) -> int:
    top, subs = _parsers()
    checked = 0
    for snippet in _code_snippets(text):
        found = _command_flags(snippet)
        if found is None:
            continue
        sub, flags = found
        parser = top if sub is None or sub == "COMMAND" else subs.get(sub)
        assert parser is not None, f"{name}: {snippet!r} names no command of asymrnr-compile"
        unknown = [flag for flag in flags if flag not in _options(parser)]
        assert not unknown, f"{name}: {snippet!r} uses flags {unknown} that `asymrnr-compile {sub} --help` lacks"
        checked += 1
    return checked


def test_every_asymrnr_compile_command_in_the_readme_uses_existing_flags():
    readme = README.read_text()
    assert _check_commands(readme, "README.md") >= 3


@pytest.mark.parametrize("path", COMMAND_DOCS, ids=lambda path: path.name)
def test_every_asymrnr_compile_command_in_the_docs_uses_existing_flags(path):
    _check_commands(path.read_text(), path.name)


def test_every_flag_the_readme_names_exists_with_the_default_it_states():
    """A flag in a span of its own (`--quality-prompts`) is a command-line flag: it must exist,
    and a default written after it ("`--steps` (default 4)") must be the one `--help` shows."""
    readme = README.read_text()
    _, subs = _parsers()
    actions: dict[str, list[argparse.Action]] = {}
    for parser in subs.values():
        for option, action in _options(parser).items():
            actions.setdefault(option, []).append(action)
    bare = [snippet for snippet in _code_snippets(readme) if snippet.startswith("--")]
    for snippet in bare:
        flag = snippet.split()[0]
        assert flag in actions, f"README.md names {flag}, which no asymrnr-compile command has"
    stated = re.findall(r"`(--[\w-]+)[^`]*` \(default:? ([^)]+)\)", readme)
    assert stated, "the README states no default; keep at least one, checked here"
    for flag, default in stated:
        shown = {str(action.default) for action in actions[flag]}
        assert default.strip() in shown, f"README.md says {flag} defaults to {default}; --help shows {shown}"


def test_the_command_scan_finds_bad_flags():
    with pytest.raises(AssertionError, match="--no-quality-settings"):
        _check_commands("Run `asymrnr-compile demo --no-quality-settings`.", "sample")
    assert _check_commands("`asymrnr-compile demo --steps 4`, then\n`asymrnr-compile\nprofile --out x`", "s") == 2
