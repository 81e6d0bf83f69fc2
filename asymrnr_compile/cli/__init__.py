"""Command line: ``asymrnr-compile demo | profile | train`` (also ``python -m asymrnr_compile ...``).

Each subcommand lives in its own module (:mod:`~asymrnr_compile.cli.demo`,
:mod:`~asymrnr_compile.cli.profile`, :mod:`~asymrnr_compile.cli.train`), which registers its
parser and runs it; this module assembles the parser and runs the chosen command.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from asymrnr_compile.cli.demo import add_demo_command
    from asymrnr_compile.cli.profile import add_profile_command
    from asymrnr_compile.cli.train import add_train_command

    parser = argparse.ArgumentParser(prog="asymrnr-compile", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the backend does")
    commands = parser.add_subparsers(dest="command", required=True)
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
