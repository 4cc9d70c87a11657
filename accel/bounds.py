"""Upper bounds checked before any work: image counts, threads, memory, device (one home, so every
command and API call refuses the same numbers before it allocates in proportion to them).

Each check raises :class:`accel.errors.SettingError` naming the setting (``num_images``, ``threads``);
a command turns that name into its flag.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import SettingError

# Images of one seed set (bench) or one evaluation (tune): twice FID's customary 50,000. Above it the
# seed and condition lists alone take gigabytes and a run would take days even on the toy models.
MAX_IMAGES = 100_000
# Sampling steps of one pipeline call: diffusers' samplers are trained on 1,000 timesteps, and the
# scheduler allocates its timestep arrays in proportion to the count.
MAX_STEPS = 10_000
# Timed repeats / warm-up rounds: each is a full pipeline call; 1,000 is hours of timing already.
MAX_REPEATS = 1_000
# Images of one calibration call (schedule-cache): they are one pipeline batch, and 4-8 suffice (calibrate_schedule).
MAX_CALIBRATION_IMAGES = 1_024


def check_count(setting: str, value: int, limit: int, why: str = "") -> None:
    """SettingError unless `value` is an integer in [1, limit]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(setting, f"must be an integer, got {value!r}")
    if value < 1:
        raise SettingError(setting, f"must be >= 1, got {value}")
    if value > limit:
        raise SettingError(setting, f"{value} is more than the limit of {limit:,}{why}")


def check_images(setting: str, value: int, limit: int = MAX_IMAGES) -> None:
    """An image count in [1, limit]: checked before a seed list of that length is built."""
    check_count(setting, value, limit, " images")


def check_steps(setting: str, value: int) -> None:
    """A sampling step count in [1, MAX_STEPS]."""
    check_count(setting, value, MAX_STEPS, " steps")


def cpu_count() -> int:
    """The CPU cores of this machine (os.cpu_count; 1 when unknown)."""
    return os.cpu_count() or 1


def check_threads(value: int | None) -> None:
    """A thread count in [1, cores]: torch accepts 100000 and the next load then fails obscurely."""
    if value is not None:
        check_count("threads", value, cpu_count(), f" (this machine has {cpu_count()} CPU cores)")


def available_memory() -> int | None:
    """Bytes of RAM available now (Linux/macOS sysconf), None when unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(setting: str, value: int, need_bytes: int, what: str) -> None:
    """SettingError when `what` (sized by `setting` = `value`) needs more RAM than is available now."""
    free = available_memory()
    if free is not None and need_bytes > free:
        raise SettingError(setting, f"{value}: {what} need {need_bytes / 2**30:.1f} GiB, more than the "
                                    f"{free / 2**30:.1f} GiB of memory available; use fewer")


def check_device(device: Any) -> None:
    """SettingError unless `device` is cpu, or a CUDA device that this machine (and torch build) has."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SettingError("device", f"{device!r}: {exc}; choose auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise SettingError("device", f"{device!r}: choose auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device", f"{device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError("device", f"{device}: this machine has {torch.cuda.device_count()} GPU(s)")
