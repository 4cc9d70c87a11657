"""The ``accel`` command line: a thin dispatcher over accel/commands/ (one module per subcommand).

Each subcommand module registers itself with ``add_parser(subparsers)`` and sets ``func`` to a
callable taking the parsed args and returning the exit code.
"""

from __future__ import annotations

import argparse
import sys

from .argtypes import one_line_errors


def build_parser() -> argparse.ArgumentParser:
    from .commands import add_parsers

    parser = argparse.ArgumentParser(prog="accel", description="accelerate diffusers diffusion transformers")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parsers(sub)
    for p in sub.choices.values():
        one_line_errors(p)  # one error line and exit 2, no usage block, for every subcommand
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["accel", *(sys.argv[1:] if argv is None else argv)]
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .commands._shared import fail
    from .outputs import OutputError

    try:
        return int(args.func(args) or 0)
    except OutputError as exc:  # a cache folder (ACCEL_CACHE_DIR) or output found unusable mid-command: one line
        return fail(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
