"""What every result file records about its run, and strict JSON for it.

``run_meta()`` gives the command line, the project's git commit (`accel.provenance.git_commit`;
None outside a git checkout) and the versions of the packages that shape the numbers. ``strict_json``
replaces non-finite floats (JSON has no Infinity/NaN) by ``null`` and says where, so
the caller can add a note such as "psnr null = identical to baseline (infinite)".
"""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

from ..provenance import git_commit

PACKAGES = ("torch", "diffusers", "accelerate", "torchmetrics", "transformers", "accel")


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def run_meta(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``{command, git_commit, versions}`` of this run (``argv`` defaults to ``sys.argv``)."""
    return {
        "command": list(sys.argv if argv is None else argv),
        "git_commit": git_commit(),
        "versions": package_versions(),
    }


def strict_json(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """``(obj with every non-finite float replaced by None, the dotted paths replaced)``.

    NumPy and 0-d torch scalars become Python numbers first; tuples become lists.
    """
    if not isinstance(obj, (str, bytes, dict, list, tuple)) and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [f"{path or '(root)'} = {obj}"]
    if isinstance(obj, dict):
        out, where = {}, []
        for k, v in obj.items():
            out[k], w = strict_json(v, f"{path}.{k}" if path else str(k))
            where += w
        return out, where
    if isinstance(obj, (list, tuple)):
        items = [strict_json(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [w for _, ws in items for w in ws]
    return obj, []
