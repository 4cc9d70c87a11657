"""The `accel` subcommands, one module each, on top of the library.

Each module has ``add_parser(subparsers)``, which registers the subcommand's flags and sets
``func`` to its ``run(args) -> exit code``. Flags shared by several subcommands live in
``_shared.py``; ``accel/cli.py`` only builds the parser from ``COMMANDS`` and dispatches.
Nothing in the library imports this package: commands depend on eval / tune / pruning /
tokens, never the other way round.
"""

from __future__ import annotations

import importlib
from typing import Any

COMMANDS = ("inspect", "bench", "diffrate", "prune", "distill", "tune")  # the order of `accel --help`


def add_parsers(subparsers: Any) -> None:
    """Register every subcommand of :data:`COMMANDS`."""
    # the methods register in import order, which is the order of `accel bench`'s default rows and of
    # `accel tune`'s space: on the command line the token methods come first, then the caches
    importlib.import_module("accel.tokens")
    importlib.import_module("accel.caching")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
