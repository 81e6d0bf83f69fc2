"""The command line's help: every command listed and described, defaults shown, choices enforced."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from asymrnr_lab.cli import build_parser, main

COMMANDS = ("demo", "profile", "train")


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command_with_a_line_of_its_own(capsys):
    text = _help([], capsys)
    for command in COMMANDS:
        line = next(line for line in text.splitlines() if line.strip().startswith(command + " "))
        assert len(line.split()) > 3, f"{command} has no one-line description: {line!r}"
    assert "quality" in text  # demo's line names its quality part
    assert "``" not in text and ":mod:" not in text and ":func:" not in text  # no raw reST markup
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert set(subcommands) == set(COMMANDS)


def test_the_installed_script_and_python_dash_m_print_the_same_help():
    by_module = subprocess.run([sys.executable, "-m", "asymrnr_lab", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert all(command in by_module for command in COMMANDS)
    script = shutil.which("asymrnr-compile")
    if script is not None:  # installed with pip install -e .
        by_script = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
        assert by_script == by_module


@pytest.mark.parametrize("command, defaults", [
    ("demo", ["--steps STEPS", "(default: 4)", "(default: attention)", "(default: out/demo)", "(default: 3)",
              "(default: synthetic-fine)", "(default 0.5; published 0.5)", "(default 0.3; published 0.3)",
              "(default hidden_states; published features)", "(default 2; published 5)"]),
    ("profile", ["(default: reference)", "(default: 10)", "(default: 1.5)", "(default: euclidean)",
                 "(default: distance)", "(default: 4)"]),
    ("train", ["(default: 4000)", "(default: 32)", "(default: cpu)", "(default: reference)",
               "Default: synthetic with --arch reference, cogvideox with --arch cogvideox", "(default: 1000)"]),
])
def test_each_command_has_a_description_and_shows_its_defaults(command, defaults, capsys):
    text = _help([command], capsys)
    usage, rest = text.split("\n\n", 1)
    description = rest.split("\noptions:")[0]
    assert usage.startswith(f"usage: asymrnr-compile {command}")
    assert len(description.split()) > 40, f"{command} --help has no description"
    flat = re.sub(r"\s+", " ", text)
    for default in defaults:
        assert default in flat, f"{command} --help does not show {default!r}"
    assert "(default: None)" not in flat and "(default: False)" not in flat


@pytest.mark.parametrize("command, option, choices", [
    ("demo", "--preset", "{tiny,small,attention,"),
    ("demo", "--quality-model", "{synthetic,synthetic-fine}"),
    ("demo", "--match-on", "{features,hidden_states}"),
    ("profile", "--similarity", "{euclidean,cosine,dot}"),
    ("profile", "--preset", "{tiny,small,attention,"),
    ("profile", "--model", "{reference,synthetic,cogvideox,"),
    ("train", "--preset", "{synthetic,synthetic-fine,cogvideox,cogvideox-fine}"),
    ("train", "--arch", "{reference,cogvideox}"),
    ("train", "--device", "{cpu,cuda}"),
])
def test_choices_are_listed(command, option, choices, capsys):
    assert f"{option} {choices}" in _help([command], capsys)


def test_choices_come_from_the_package():
    from asymrnr_compile.ops import SIMILARITIES
    from asymrnr_lab.models.config import PRESETS
    from asymrnr_lab.synthetic.model import ARCHS, TEXT_TO_VIDEO_PRESETS

    commands = build_parser()._subparsers._group_actions[0].choices
    options = {name: {a.dest: a for a in parser._actions} for name, parser in commands.items()}
    assert tuple(options["profile"]["similarity"].choices) == SIMILARITIES
    assert list(options["profile"]["preset"].choices) == list(PRESETS) == list(options["demo"]["preset"].choices)
    assert tuple(options["train"]["preset"].choices) == TEXT_TO_VIDEO_PRESETS
    assert tuple(options["train"]["arch"].choices) == ARCHS


@pytest.mark.parametrize("argv, option", [
    (["profile", "--out", "unused", "--similarity", "manhattan"], "--similarity"),
    (["profile", "--out", "unused", "--preset", "huge"], "--preset"),
    (["demo", "--preset", "huge"], "--preset"),
    (["demo", "--quality-model", "attention"], "--quality-model"),
    (["train", "--out", "unused", "--device", "tpu"], "--device"),
    (["train", "--out", "unused", "--preset", "attention"], "--preset"),
    (["train", "--out", "unused", "--arch", "dit"], "--arch"),
    (["serve"], "COMMAND"),
])
def test_a_bad_choice_exits_with_argparses_error(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and option in err and err.startswith("usage: asymrnr-compile")
