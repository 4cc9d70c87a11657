"""Peak memory of one measured region.

CUDA: ``torch.cuda.reset_peak_memory_stats`` before, ``max_memory_allocated`` after
(bytes allocated by torch tensors on that device).

CPU (Linux only): the process's resident-set high-water mark. Writing ``"5"`` to
``/proc/self/clear_refs`` resets the mark to the current RSS, and ``VmHWM`` in
``/proc/self/status`` is read afterwards. It counts the whole process (weights, Python,
allocator caches), so compare methods within one run rather than across machines.
Where neither is available the value is ``None``.
"""

from __future__ import annotations

import os

import torch


def _read_vmhwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_cpu_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager; ``.peak_mb`` is the peak in MiB for the region, or None."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_mb: float | None = None
        self.kind: str | None = None
        self._cpu_ok = False

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_memory_allocated"
        else:
            self._cpu_ok = _reset_cpu_hwm() and _read_vmhwm_kb() is not None
            self.kind = "cpu_vmhwm" if self._cpu_ok else None
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda_max_memory_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._cpu_ok:
            kb = _read_vmhwm_kb()
            self.peak_mb = kb / 1024 if kb is not None else None


def measure_peak(fn, device="cpu"):
    """Run ``fn()``; return (result, peak MiB or None)."""
    with PeakMemory(device) as pm:
        out = fn()
    return out, pm.peak_mb


def memory_kind(device="cpu") -> str | None:
    """What ``peak_mem_mb`` means on this device: the measurement used, or None."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return "cuda_max_memory_allocated"
    return "cpu_vmhwm" if _read_vmhwm_kb() is not None and os.access("/proc/self/clear_refs", os.W_OK) else None
