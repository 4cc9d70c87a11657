"""Errors accel raises on purpose; each message says what to do next."""

from __future__ import annotations


class AccelError(Exception):
    """Base class of accel's own errors."""


class InputError(AccelError, ValueError):
    """Bad user input (a flag's value, a file given on the command line): one line, exit code 2."""


class SettingError(InputError):
    """A setting's value is refused. The text names the setting (``num_images 10 is ...``); a command
    prints its flag instead (``--num-images 10 is ...``), from `setting` and `detail`; `also` lists other
    settings the detail names (as words), which a command spells as flags too. A setting "" names none (the
    text is the detail: `OutputError` of the cache folder); one that is not a name is printed as it is."""

    def __init__(self, setting: str, detail: str, also: tuple[str, ...] = ()) -> None:
        super().__init__(f"{setting}{'' if detail.startswith(':') else ' '}{detail}" if setting else detail)
        self.setting, self.detail, self.also = setting, detail, tuple(also)

    def __reduce__(self) -> tuple:  # picklable across processes, like any exception
        return type(self), (self.setting, self.detail, self.also)


class UnsupportedModelError(AccelError, ValueError):
    """The model (or the pipeline's transformer) is not a supported diffusion transformer."""


class AlreadyAcceleratedError(AccelError, RuntimeError):
    """`accel.apply` was called on a model that already carries an accel handle."""


class ModelNotFoundError(AccelError, FileNotFoundError):
    """Weights for a requested model are not on this machine."""


class BackendUnavailableError(AccelError, RuntimeError):
    """An optional backend (e.g. xformers) was requested but cannot be imported."""


class UnsupportedMethodError(AccelError, ValueError):
    """A method the model (its family) or the pipeline cannot run, e.g. token merging on Qwen-Image;
    `accel bench` lists such a method as skipped, with this reason."""


def one_line(exc: BaseException) -> str:
    """An error as the one line a command prints: its message with whitespace collapsed (else its type)."""
    return " ".join(str(exc).split()) or type(exc).__name__
