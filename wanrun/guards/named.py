"""Scheduler steps and phases recognised by name (``rules/runtime/targets.toml``) in code already imported.

``wanrun generate --repo`` patches the named classes as the user's checkout imports them; the Python API has
nothing to watch imports with (the notebook imported diffusers long ago), so the guard patches the named classes
and functions it finds in ``sys.modules`` when it starts, and puts them back when it ends. A scheduler's
``set_timesteps`` says how many steps there are, its ``step`` ends one; ``encode_prompt`` and the VAE's
``decode`` are timed as phases. A function is never wrapped twice (the runner's wrappers carry the same mark).
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

from wanrun.targets import Targets

# target names -> (module name -> the target names it holds, module names looked at), kept for the process
_FOUND: dict[tuple[str, ...], tuple[dict[str, list[str]], set[str]]] = {}
MARK = "__wanrun_watch__"  # set on every wrapper: a function that has it is not wrapped again


class Listener(Protocol):
    def scheduled(self, scheduler: Any) -> None: ...

    def scheduler_stepped(self) -> None: ...

    def named_phase(self, name: str) -> AbstractContextManager[Any]: ...


@dataclass
class _Patch:
    owner: Any
    name: str
    original: Any


def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
    setattr(fn, MARK, True)
    return fn


class NamedHooks:
    def __init__(self, targets: Targets, listener: Listener) -> None:
        self.targets = targets
        self.listener = listener
        self._patches: list[_Patch] = []
        self.schedulers: list[str] = []  # scheduler classes patched, by name

    def install(self) -> None:
        """Patch what the targets name in the modules imported so far. Which modules hold a target is kept per
        process: a notebook's second guard looks only at the modules imported since the first."""
        names = sorted(self.targets.names())
        hits, scanned = _FOUND.setdefault(tuple(names), ({}, set()))
        for name in [n for n in list(sys.modules) if n not in scanned]:
            scanned.add(name)
            mod = sys.modules.get(name)
            namespace = mod.__dict__ if isinstance(mod, types.ModuleType) else None
            held = [t for t in names if t in namespace] if namespace else []
            if held:
                hits[name] = held
        for name, held in hits.items():
            mod = sys.modules.get(name)
            if not isinstance(mod, types.ModuleType):
                continue
            for target in held:
                obj = mod.__dict__.get(target)
                if obj is not None and getattr(obj, "__module__", None) == name:
                    self._patch(mod, target, obj)

    def remove(self) -> None:
        for patch in reversed(self._patches):  # each on its own: one that fails never keeps the rest on
            with suppress(Exception):
                setattr(patch.owner, patch.name, patch.original)
        self._patches.clear()

    def _patch(self, module: Any, name: str, obj: Any) -> None:
        t = self.targets
        if inspect.isclass(obj):
            for dotted in [*t.step_methods, *t.schedule_methods, *(n for v in t.phases.values() for n in v)]:
                cls_name, _, method = dotted.partition(".")
                original = obj.__dict__.get(method) if cls_name == name and method else None
                if not callable(original) or isinstance(original, staticmethod | classmethod):
                    continue
                if getattr(original, MARK, False):
                    continue
                if dotted in t.step_methods:
                    wrapped = self._wrap_step(original)
                    self.schedulers.append(name)
                elif dotted in t.schedule_methods:
                    wrapped = self._wrap_schedule(original)
                else:
                    wrapped = self._wrap_phase(original, t.phase_of(dotted) or "other")
                self._patches.append(_Patch(obj, method, original))
                setattr(obj, method, wrapped)
        elif callable(obj) and not getattr(obj, MARK, False):
            phase = t.phase_of(name)
            if phase is not None:
                self._patches.append(_Patch(module, name, obj))
                setattr(module, name, self._wrap_phase(obj, phase))

    def _wrap_step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        listener = self.listener

        @functools.wraps(original)
        def step(sched: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(sched, *args, **kwargs)
            listener.scheduler_stepped()
            return result

        return mark(step)

    def _wrap_schedule(self, original: Callable[..., Any]) -> Callable[..., Any]:
        listener = self.listener

        @functools.wraps(original)
        def set_timesteps(sched: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(sched, *args, **kwargs)
            listener.scheduled(sched)
            return result

        return mark(set_timesteps)

    def _wrap_phase(self, original: Callable[..., Any], phase: str) -> Callable[..., Any]:
        listener = self.listener

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with listener.named_phase(phase):
                return original(*args, **kwargs)

        return mark(timed)
