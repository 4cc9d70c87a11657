"""Where `accel bench` runs: processes (accelerate), device, dtype, threads (the scheduler: accel.pipelines).

Every function turns a bad value into a :class:`SettingError` that names the setting (or a BenchInputError).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..bounds import check_device
from ..errors import SettingError
from . import timing
from .methods import BenchInputError, BenchSettingError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class SingleProcess:
    """The one-process stand-in for accelerate's ``PartialState``."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def distributed_state(device_arg: str | None) -> Any:
    """accelerate's ``PartialState`` when launched with several processes, else :class:`SingleProcess`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SingleProcess()
    from accelerate import PartialState

    cpu = device_arg == "cpu" or (device_arg in (None, "auto") and not torch.cuda.is_available())
    return PartialState(cpu=cpu)


def gather(state: Any, obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if state.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def resolve_device(name: str | None, state: Any = None) -> torch.device:
    """``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``; several processes use their own GPU."""
    multi = state is not None and getattr(state, "num_processes", 1) > 1
    if name in (None, "auto"):
        if multi:
            return torch.device(state.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)  # SettingError("device", ...): not a device, or one this machine lacks
    dev = torch.device(name)
    if dev.type == "cuda" and multi:
        return torch.device(state.device)
    return dev


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise BenchSettingError("dtype", f"{name!r}: choose one of float32, float16, bfloat16")
    return DTYPES[name]


def pin_threads(n: int | None) -> int:
    """`timing.pin_threads`, with a bad count as bench input error."""
    try:
        return timing.pin_threads(n)
    except SettingError:  # names the setting; the command names its flag
        raise
    except ValueError as exc:
        raise BenchInputError(str(exc)) from None
