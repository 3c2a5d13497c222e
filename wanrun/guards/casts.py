"""Telling weights from activations, and a cast that repeats from one that happens once.

A weight is a parameter or buffer of an attached model, a tensor a module keeps in a plain attribute (model
state such as Wan's RoPE ``freqs``), or a tensor an offload hook keeps for a module. Weights are known by object
identity first (a ``Parameter`` keeps its Python object when ``module.to()`` moves its data) and by data
pointer second (``param.data`` views, offload hooks' host copies). A cast of a weight that was already
cast before is *repeated*: the same bytes converted again, the cost of fp32 weights under autocast or of a
``.to(dtype)`` on weights inside ``forward``. Every other cast is an activation cast, counted apart: activations
are fresh each forward, and the caching allocator hands their memory to the next ones, so a pointer cannot
say "the same tensor" for them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import chain

import torch
from torch import nn

from wanrun.guards.residency import Model, dotted, offload_weights_maps

_PLAIN = frozenset({bool, int, float, str, type(None), dict, OrderedDict, set, list, tuple})


def _ptr_key(t: torch.Tensor) -> tuple[int, int, torch.dtype] | None:
    if t.is_meta or t.numel() == 0:
        return None
    try:
        return t.data_ptr(), t.numel(), t.dtype
    except RuntimeError:  # tensors without storage (fake or functional wrappers)
        return None


def module_paths(models: Sequence[Model]) -> list[tuple[str, nn.Module]]:
    """(reported path, module) of every module of the attached models, in order."""
    return [(dotted(prefix, label, path), m) for prefix, label, model in models for path, m in model.named_modules()]


class WeightIndex:
    """Which tensors are weights of the attached models, and which module owns each (its dotted path).

    Built at the start of each inspected step (weights may have moved or been replaced since the last one) from
    the module list the session also names its stack from: under 2 ms for Wan-1.3B on a CPU.
    """

    def __init__(self, models: Sequence[Model] = (), *, paths: Sequence[tuple[str, nn.Module]] | None = None) -> None:
        self._by_id: dict[int, tuple[torch.Tensor, str, str]] = {}  # id -> (tensor kept alive, module, name)
        self._by_ptr: dict[tuple[int, int, torch.dtype], tuple[str, str]] = {}
        for owner, module in module_paths(models) if paths is None else paths:
            for name, t in self._tensors(module):
                qual = f"{owner}.{name}"
                self._by_id[id(t)] = (t, owner, qual)
                key = _ptr_key(t)
                if key is not None:
                    self._by_ptr[key] = (owner, qual)

    @staticmethod
    def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
        found = [(n, t) for n, t in chain(module._parameters.items(), module._buffers.items()) if t is not None]
        # model state kept in plain attributes (Wan's ``self.freqs``, moved to the device on first use); a type
        # test first, as a tensor isinstance check is slow on the dozen plain values a module holds
        found += [(n, t) for n, t in module.__dict__.items() if type(t) not in _PLAIN and isinstance(t, torch.Tensor)]
        if "_hf_hook" in module.__dict__:
            for weights in offload_weights_maps(module):
                for name in chain(module._parameters, module._buffers):
                    try:
                        t = weights[name]
                    except (KeyError, TypeError, AttributeError, RuntimeError):
                        continue
                    if isinstance(t, torch.Tensor):
                        found.append((name, t))
        return found

    def lookup(self, t: torch.Tensor) -> tuple[str, str] | None:
        """(owning module path, qualified weight name) of a weight, or None for anything else."""
        hit = self._by_id.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1], hit[2]
        key = _ptr_key(t)
        return self._by_ptr.get(key) if key is not None else None


class CastTracker:
    """Remembers which weights were cast, across steps, to tell a repeated cast from a first one.

    Weights are keyed by their qualified name and the cast's output size, which stay the same when offload
    moves their data (their pointers do not).
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, int]] = set()

    def repeated(self, weight: str, out_bytes: int) -> bool:
        """Record a cast of the named weight; True when it was cast before (in this forward or an earlier one)."""
        key = (weight, out_bytes)
        if key in self._seen:
            return True
        self._seen.add(key)
        return False
