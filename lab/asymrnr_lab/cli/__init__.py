"""The command line, ``asymrnr-compile`` (also ``python -m asymrnr_lab``).

Each subcommand lives in its own module (:mod:`~asymrnr_lab.cli.demo`,
:mod:`~asymrnr_lab.cli.profile`, :mod:`~asymrnr_lab.cli.train`), which registers its
parser and runs it; this module assembles the parser and runs the chosen command. Long steps
show their progress on stderr (:mod:`~asymrnr_lab.cli.progress`).
"""

from __future__ import annotations

import argparse
import logging
import sys

DESCRIPTION = """\
AsymRnR token reduction for video diffusion transformers, as a torch.compile backend.
Run `asymrnr-compile COMMAND --help` for a command's description, options and defaults."""
EPILOG = """\
In Python: torch.compile(model, backend="asymrnr", options={...}, dynamic=False);
see README.md."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: ...)`` after every option that takes a value and has a default (not after
    required ones, ``None`` or on/off flags, which are off unless given), and keeps descriptions'
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0:
            return action.help or ""
        return super()._get_help_string(action) or ""


def add_command(commands: argparse._SubParsersAction, name: str, summary: str,
                description: str) -> argparse.ArgumentParser:
    """Add a subcommand: ``summary`` is its line in the top-level help, ``description`` heads its
    own help (which shows every default)."""
    return commands.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from asymrnr_lab.cli.demo import add_demo_command
    from asymrnr_lab.cli.profile import add_profile_command
    from asymrnr_lab.cli.train import add_train_command

    parser = argparse.ArgumentParser(prog="asymrnr-compile", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the backend does")
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    add_demo_command(commands)
    add_profile_command(commands)
    add_train_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, TypeError) as error:
        print(f"asymrnr-compile: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
