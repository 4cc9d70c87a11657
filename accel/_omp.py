"""OpenMP wait policy of the `accel` command line, set before torch loads.

With torch's default of one thread per core, OpenMP's default wait policy keeps idle threads
spinning between parallel regions; when another process holds a core they fight it for the
CPU and `accel bench` collapses (issue 18: 48 min instead of 6.7 on 2 cores beside one other
process). ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) keeps the default thread
count usable there: benchmarks/busy_machine.py with one busy-loop process beside a small bench
on the 2-core CPU (already loaded by other jobs): 2 threads default policy > 480 s (stopped),
2 threads PASSIVE 244 s, 1 thread 407 s; without the busy loop > 360 s, 186 s, 303 s
(benchmarks/results/busy_machine*.json). OpenMP reads the variable once, when torch loads,
so it is set here, imported by ``accel/__init__`` before anything imports torch, and only:

* in the `accel` command (the console script or ``python -m accel.cli``, also under torchrun /
  accelerate launch), never in a program that merely imports accel;
* when the user has not set ``OMP_WAIT_POLICY`` (any value, even empty, is theirs);
* when torch is not loaded yet (afterwards it would change nothing).
"""

from __future__ import annotations

import os
import sys


def is_accel_cli(argv: list[str]) -> bool:
    """Whether ``argv`` (``sys.orig_argv``: the interpreter's own command line) runs the accel CLI."""
    args = argv[1:]
    if "-m" in args:
        i = args.index("-m")
        return i + 1 < len(args) and args[i + 1] == "accel.cli"
    script = next((a for a in args if not a.startswith("-")), "")
    return os.path.basename(script) in ("accel", "accel.exe", "accel-script.py")


def set_cli_wait_policy(environ: dict = os.environ, argv: list[str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` under the conditions above; returns whether it did."""
    argv = list(getattr(sys, "orig_argv", sys.argv)) if argv is None else argv
    if "OMP_WAIT_POLICY" in environ or "torch" in sys.modules or not is_accel_cli(argv):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


set_cli_wait_policy()
