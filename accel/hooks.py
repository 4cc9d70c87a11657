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
            registry.remove_hook(name, recurse=False)
            if not registry._hook_order:
                if not had_forward and COMPILED not in module.__dict__:  # keep accel.compile's forward
                    module.__dict__.pop("forward", None)
                if not had_registry:
                    del module.__dict__["_diffusers_hook"]
        self._invalidate()

    def _invalidate(self) -> None:
        # Ancestor registries cache the list of child registries (used by cache_context).
        registry = self._root.__dict__.get("_diffusers_hook")
        if registry is not None:
            registry.invalidate_child_registries_cache()
