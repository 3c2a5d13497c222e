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

from collections.abc import Iterator, Sequence
from itertools import chain

import torch
from torch import nn

from wanrun.guards.residency import Model, dotted, offload_weights_maps


def _ptr_key(t: torch.Tensor) -> tuple[int, int, torch.dtype] | None:
    if t.device.type == "meta" or t.numel() == 0:
        return None
    try:
        return t.data_ptr(), t.numel(), t.dtype
    except RuntimeError:  # tensors without storage (fake or functional wrappers)
        return None


class WeightIndex:
    """Which tensors are weights of the attached models, and which module owns each (its dotted path)."""

    def __init__(self, models: Sequence[Model]) -> None:
        self._by_id: dict[int, tuple[torch.Tensor, str, str]] = {}  # id -> (tensor kept alive, module, name)
        self._by_ptr: dict[tuple[int, int, torch.dtype], tuple[str, str]] = {}
        for prefix, label, model in models:
            for path, module in model.named_modules():
                owner = dotted(prefix, label, path)
                for name, t in self._tensors(module):
                    qual = f"{owner}.{name}"
                    self._by_id[id(t)] = (t, owner, qual)
                    key = _ptr_key(t)
                    if key is not None:
                        self._by_ptr[key] = (owner, qual)

    @staticmethod
    def _tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        own = chain(module._parameters.items(), module._buffers.items())
        yield from ((n, t) for n, t in own if t is not None)
        # model state kept in plain attributes (Wan's ``self.freqs``, moved to the device on first use)
        yield from ((n, t) for n, t in vars(module).items() if isinstance(t, torch.Tensor))
        for weights in offload_weights_maps(module):
            for name in chain(module._parameters, module._buffers):
                try:
                    t = weights[name]
                except (KeyError, TypeError, AttributeError, RuntimeError):
                    continue
                if isinstance(t, torch.Tensor):
                    yield name, t

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
