"""Finding the denoiser nobody named, every expert of it, and where its forwards can be watched.

* By class: a module whose class (or a base class, or the class a ``torch.compile`` wrapper holds) is named in
  ``rules/runtime/targets.toml`` is a denoiser at its first forward.
* By size: otherwise the module whose forward runs repeatedly at the top level (no other module's forward
  around it) and holds the most parameters: within one step when steps are known (the text encoder and the VAE
  run outside the steps), else once it has run three times (the text encoder runs twice, for the prompt and the
  negative prompt).
* Experts: the object that holds the denoiser (a pipeline, Wan's ``WanT2V``), found on the call stack, also
  holds the other expert of a two-expert model (``transformer_2``, ``low_noise_model``).
* Wrappers: a ComfyUI-style model whose ``apply_model`` calls its inner model directly never runs its own
  forward; the guard hooks the wrapper and the descendants that hold most of its parameters.

Global hooks cost every module call in the process, so they are installed only while no denoiser is known.
They do nothing while dynamo traces (a compiled region must compile as it would without the guard).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from wanrun.guards.handles import remove_handles

OWNER_FRAMES = 24  # how far up the stack to look for the object that holds a denoiser
WRAPPED_SHARE = 0.9  # a wrapper's inner model holds nearly all of its parameters
REPEATS = 3  # top-level calls that make a module "run repeatedly" when no step is known
_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)  # parts of a model, not a model a wrapper holds


def inner(module: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) holds, else the module itself."""
    orig = module.__dict__.get("_modules", {}).get("_orig_mod")
    return orig if isinstance(orig, nn.Module) else module


def class_names(module: nn.Module) -> set[str]:
    return {c.__name__ for c in type(inner(module)).__mro__}


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compiled(model: nn.Module) -> bool:
    """Some of ``model`` runs under torch.compile: a compile wrapper, or a module compiled in place."""
    if inner(model) is not model:
        return True
    return any(m.__dict__.get("_compiled_call_impl") is not None for m in model.modules())


def hook_points(model: nn.Module) -> list[nn.Module]:
    """``model`` and the descendants that hold nearly all its parameters and have a forward of their own: the
    inner model of a wrapper whose ``apply_model`` calls it directly. The guard counts the outermost one that
    runs."""
    points, cur = [model], inner(model)
    total = parameter_count(cur)
    while total:
        children = [c for c in cur.children()]
        best = max(children, key=parameter_count, default=None)
        if best is None or parameter_count(best) < WRAPPED_SHARE * total:
            break
        cur = best
        if not isinstance(cur, _CONTAINERS):
            points.append(cur)
    return points


def owner_of(
    module: nn.Module, is_sibling: Callable[[nn.Module], bool], skip: tuple[type, ...] = ()
) -> tuple[str, list[tuple[str, nn.Module]]]:
    """The attribute name that holds ``module`` on an object up the call stack, and the modules held beside it
    that ``is_sibling`` accepts (``transformer_2``, ``low_noise_model``). Empty when no such object is found."""
    frame = sys._getframe(1)
    for _ in range(OWNER_FRAMES):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if owner is not None and owner is not module and not isinstance(owner, skip):
            held = _held(owner)
            name = next((n for n, v in held if v is module), None)
            if name is not None:
                return name, [(n, v) for n, v in held if v is module or is_sibling(v)]
        frame = frame.f_back
    return "", []


def _held(owner: Any) -> list[tuple[str, nn.Module]]:
    attrs = dict(getattr(owner, "__dict__", {}))
    if isinstance(owner, nn.Module):
        attrs.update(owner._modules)
    return [(n, v) for n, v in attrs.items() if isinstance(n, str) and isinstance(v, nn.Module)]


def denoisers_on_stack(names: Collection[str], skip: tuple[type, ...] = ()) -> list[tuple[str, nn.Module]]:
    """Denoisers (by class name) held by the objects up the call stack: a compiled model whose forward no hook
    sees is still found where the loop keeps it (``self.transformer``, ``self.low_noise_model``)."""
    frame, found = sys._getframe(1), {}
    for _ in range(OWNER_FRAMES):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if owner is not None and not isinstance(owner, skip):
            for n, v in _held(owner):
                if class_names(v).intersection(names):
                    found.setdefault(id(v), (n, v))
        frame = frame.f_back
    return list(found.values())


class Discovery:
    """Global forward hooks that watch top-level module calls until a denoiser is known."""

    def __init__(self, names: Collection[str], adopt: Callable[[nn.Module, str], None]) -> None:
        self.names = set(names)
        self._adopt = adopt
        self._depth = 0
        self._calls: dict[int, int] = {}  # top-level calls per module, since the start
        self._window: dict[int, int] = {}  # top-level calls per module, since the last ``mark``
        self._seen: dict[int, nn.Module] = {}
        self._sizes: dict[int, int] = {}
        self.repeats = REPEATS  # None: adopt by size only at ``largest_in_window`` (steps are known)
        self._handles: list[Any] = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def install(self) -> None:
        if not self._handles:
            self._handles = [
                register_module_forward_pre_hook(self._pre),
                register_module_forward_hook(self._post, always_call=True),
            ]

    def remove(self) -> None:
        remove_handles(self._handles)

    def mark(self) -> None:
        """Start a new window (a step begins)."""
        self._window.clear()

    def calls_in_window(self, module: nn.Module) -> int:
        return self._window.get(id(module), 0)

    def largest_in_window(self) -> nn.Module | None:
        """The module with the most parameters among those run at the top level since ``mark``."""
        ids = [i for i in self._window if self._size(self._seen[i]) > 0]
        return self._seen[max(ids, key=lambda i: self._sizes[i])] if ids else None

    def _size(self, module: nn.Module) -> int:
        key = id(module)
        if key not in self._sizes:
            self._sizes[key] = parameter_count(module)
        return self._sizes[key]

    def _pre(self, module: nn.Module, args: Any) -> None:
        if torch.compiler.is_compiling():
            return
        self._depth += 1
        if self._depth > 1:
            return
        key = id(module)
        self._seen[key] = module
        self._calls[key] = self._calls.get(key, 0) + 1
        self._window[key] = self._window.get(key, 0) + 1
        if self.names & class_names(module):
            self._adopt(module, f"class {type(inner(module)).__name__}")
            return
        if inner(module) is not module:  # a torch.compile wrapper run at the top level: the model it compiles
            self._adopt(module, "compiled")  # (adopted before dynamo traces it with these hooks installed)
            return
        if self.repeats is None or self._calls[key] < self.repeats or not self._size(module):
            return
        rivals = [i for i, n in self._calls.items() if n >= self.repeats and i != key]
        if all(self._size(module) >= self._sizes.get(i, 0) for i in rivals):
            self._adopt(module, "size")

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if torch.compiler.is_compiling():
            return
        self._depth = max(self._depth - 1, 0)
