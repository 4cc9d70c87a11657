"""Which accel made a file: the git commit of the checkout this package runs from.

Outside accel.eval on purpose: the methods' own writers (`accel prune` / `accel distill`'s
pruning.json, distill.json) record it too, and methods never import the measurement code.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD of the git checkout holding ``path`` (default: this package), ``+dirty`` if modified; else None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
