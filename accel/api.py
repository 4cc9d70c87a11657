"""`accel.apply`: install method configs on a pipeline's transformer(s) and return the handle."""

from __future__ import annotations

from typing import Any

from .config import MethodConfig
from .errors import AlreadyAcceleratedError, UnsupportedMethodError
from .families import family_of, resolve, transformers_of
from .handles import Handle, PipelineHandle, handle_of
from .hooks import habitual_compile


def apply(pipe_or_model: Any, *configs: MethodConfig | str) -> Handle | PipelineHandle:
    """Accelerate a diffusers pipeline (or its transformer) with the given method configs.

    A string stands for configs (`accel.specs.configs_from_spec`): a preset ("fast", "balanced",
    "quality"), a method at its defaults ("delta-cache") or with settings as `accel bench --methods`
    takes them ("delta-cache:interval=3,forecast=0"), or such methods stacked with "+".
    With no configs only the counters are installed (the baseline of `accel bench`).
    Two configs of the same kind (e.g. two block caches) are refused; so is a model
    that already carries a live handle, and so is a method the model's family cannot run
    (`Family.check`). A pipeline that calls several transformers (Wan 2.2: `transformer`,
    `transformer_2`) gets one handle per transformer, returned together as an
    `accel.handles.PipelineHandle`. On any error the model is left untouched.
    """
    configs = tuple(spec_configs(pipe_or_model, configs))
    for c in configs:
        if not isinstance(c, MethodConfig):
            raise TypeError(f"accel.apply takes method configs (see accel.methods()) or their names "
                            f"('balanced', 'delta-cache:interval=3'), got {type(c).__name__}")
    kinds = [c.kind for c in configs if c.kind != "probe"]
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            names = [c.cli_name for c in configs if c.kind == kind]
            raise ValueError(f"configs {names} are all of kind {kind!r}; stack at most one of each kind")
    for m in (pipe_or_model, getattr(pipe_or_model, "transformer", None)):
        if type(m).__name__ == "OptimizedModule":  # torch.compile(transformer): the model sits in _orig_mod
            raise UnsupportedMethodError(habitual_compile(m, []))
    pipeline, model = resolve(pipe_or_model)
    models = [m for _, m in transformers_of(pipeline)] if pipeline is not None else [model]
    for m in models:
        existing = handle_of(m)
        if existing is not None and existing.active:
            raise AlreadyAcceleratedError(
                f"{type(m).__name__} is already accelerated ({existing!r}). Call .remove() on that handle "
                "first, or pass all configs to one accel.apply(...) call to stack them."
            )
        for c in configs:  # what a family cannot do is refused before anything is installed
            family_of(m).check(c.kind, c.cli_name)
    handles: list[Handle] = []
    try:
        for m in models:  # one handle (step context, caches) per transformer the pipeline calls
            handles.append(Handle(m, pipeline, configs))
            handles[-1]._install()
    except BaseException:
        for h in reversed(handles):
            h.remove()
        raise
    if len(handles) == 1:
        return handles[0]
    return PipelineHandle(pipeline, handles)


def spec_configs(pipe_or_model: Any, items: tuple[Any, ...]) -> list[Any]:
    """``items`` with every string replaced by the configs it names (accel/specs.py)."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            from .specs import configs_from_spec

            out += configs_from_spec(item, pipe_or_model)
        else:
            out.append(item)
    return out
