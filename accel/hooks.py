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
