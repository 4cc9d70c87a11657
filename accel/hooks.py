"""Instance-level hooks through diffusers' `HookRegistry`, removable exactly.

diffusers' `remove_hook` leaves the bound `forward` and the `_diffusers_hook`
registry behind as instance attributes; `HookSet.remove` also clears those when it
created them, so a removed model's `__dict__` is what it was before.
"""

from __future__ import annotations

from diffusers.hooks import HookRegistry, ModelHook
import torch

from .errors import AlreadyAcceleratedError

COMPILED = "_accel_compiled"  # module.__dict__ entry of `accel.compile`: (original forward, compiled forward)
COMPILED_WHOLE = "_accel_compiled_whole"  # model.__dict__ entry of `accel.compile(regional=False)`


def habitual_compile(model: torch.nn.Module, blocks: list[torch.nn.Module], pipeline: object = None) -> str | None:
    """One line when the transformer was compiled the usual ways outside `accel.compile`, else None.

    `torch.compile(pipe.transformer)`, `transformer.compile()` and diffusers' `compile_repeated_blocks()`
    put accel's per-step hook decisions inside the compiled code: Dynamo recompiles at each step and,
    past its recompile limit, runs uncompiled. `accel.compile` compiles below the hooks instead.
    """
    wrappers = [] if pipeline is None else [v for v in vars(pipeline).values() if getattr(v, "_orig_mod", None) is model]
    if type(model).__name__ == "OptimizedModule" or wrappers:
        form = "torch.compile(pipe.transformer)"
    elif model.__dict__.get("_compiled_call_impl") is not None and not model.__dict__.get(COMPILED_WHOLE):
        form = "pipe.transformer.compile()"
    elif any(b.__dict__.get("_compiled_call_impl") is not None for b in blocks):
        form = "pipe.transformer.compile_repeated_blocks()"
    else:
        return None
    return (f"{form} compiles accel's per-step hooks into the graph (Dynamo recompiles each step, then runs "
            "uncompiled past its limit): leave the transformer uncompiled and call accel.compile(pipe) instead")


class HookSet:
    """Hooks added to module instances, removed together in reverse order."""

    def __init__(self, root: torch.nn.Module):
        self._root = root
        self._items: list[tuple[torch.nn.Module, str, bool, bool]] = []

    def add(self, module: torch.nn.Module, hook: ModelHook, name: str) -> ModelHook:
        had_registry = "_diffusers_hook" in module.__dict__
        had_forward = "forward" in module.__dict__
        registry = HookRegistry.check_if_exists_or_initialize(module)
        if registry.get_hook(name) is not None:
            raise AlreadyAcceleratedError(f"{type(module).__name__} already has a hook named {name!r}")
        registry.register_hook(hook, name)
        self._items.append((module, name, had_registry, had_forward))
        self._invalidate()
        return hook

    def remove(self) -> None:
        while self._items:
            module, name, had_registry, had_forward = self._items.pop()
            registry = module.__dict__.get("_diffusers_hook")
            if registry is None:
                continue
            outer = module.__dict__.get("forward")
            wrapped = _accelerate_wrapped(module, outer)
            registry.remove_hook(name, recurse=False)
            if wrapped and module.__dict__.get("forward") is not outer:
                # diffusers restores `forward` over accelerate's offload hook, which was added after
                # ours: keep that hook on top and let it call what was under our hook instead
                module._old_forward = module.__dict__["forward"]
                module.forward = outer
            if not registry._hook_order:
                if not had_forward and not wrapped and COMPILED not in module.__dict__:  # keep accel.compile's
                    module.__dict__.pop("forward", None)
                if not had_registry:
                    del module.__dict__["_diffusers_hook"]
        self._invalidate()

    def _invalidate(self) -> None:
        # Ancestor registries cache the list of child registries (used by cache_context).
        registry = self._root.__dict__.get("_diffusers_hook")
        if registry is not None:
            registry.invalidate_child_registries_cache()


def _accelerate_wrapped(module: torch.nn.Module, forward: object) -> bool:
    """True when `forward` is an accelerate hook (model CPU offload) wrapped around `module._old_forward`."""
    func = getattr(forward, "func", None)
    return "_old_forward" in module.__dict__ and getattr(func, "__module__", "") == "accelerate.hooks"
