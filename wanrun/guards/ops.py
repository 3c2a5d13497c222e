"""What an aten op means to the guards: a copy between host and device, a cast, a sync, or heavy compute.

One small function per op family, keyed by the op's overload packet, so the dispatch mode stays a lookup and
a loop: adding an op is adding an entry here, never a branch in the mode. A handler sees the op's arguments
and its result (the op has already run) and returns the events it stands for; most ops are not in the
registry at all and cost the mode one dict lookup (by the overload's identity, cached: hashing an
``OpOverload`` runs Python code). Handlers run for every op of an inspected forward, so they read tensor
properties that do not build objects (``is_cpu``, ``nbytes``, not ``device.type``), and heavy compute on the
accelerator (the normal case) returns no event at all.

"Host" is the CPU; any other device (cuda, xpu, mps, and meta in tests) counts as the accelerator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

EventKind = Literal["copy", "cast", "sync", "compute", "attention"]


@dataclass(slots=True)
class OpEvent:
    kind: EventKind
    nbytes: int = 0  # bytes written by the op (the copy's or the cast's output)
    src: torch.Tensor | None = None  # the tensor copied or cast (to tell weights from activations)
    direction: str = ""  # copies: "h2d" or "d2h"
    pinned: bool = False  # copies: the host side is page-locked
    blocking: bool = True  # copies: non_blocking was not asked for
    host: bool = False  # compute: ran on host tensors
    flops: float = 0.0
    to_meta: bool = False  # copies: the destination is ``meta`` (weights dropped, not uploaded, on a real device)
    kernel: str = ""  # attention: which kernel ran (see ``ATTENTION_KERNELS``)


Handler = Callable[[Sequence[Any], dict[str, Any], Any], list[OpEvent]]
REGISTRY: dict[Any, Handler] = {}


def _register(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for the aten ops that exist in this torch build (older builds lack some)."""

    def deco(fn: Handler) -> Handler:
        for name in names:
            packet = getattr(torch.ops.aten, name, None)
            if packet is not None:
                REGISTRY[packet] = fn
        return fn

    return deco


_BY_OVERLOAD: dict[int, tuple[Any, Handler | None]] = {}  # id(OpOverload) -> (the overload, its handler)


def handler_for(func: Any) -> Handler | None:
    """The handler of an OpOverload (``aten.mm.default``), or None for ops the guards ignore."""
    hit = _BY_OVERLOAD.get(id(func))
    if hit is not None and hit[0] is func:
        return hit[1]
    handler = REGISTRY.get(getattr(func, "overloadpacket", None))
    if handler is None:
        handler = _custom_attention(func)
    _BY_OVERLOAD[id(func)] = (func, handler)  # keeps the overload alive, so its id stays its own
    return handler


def nbytes(t: torch.Tensor) -> int:
    return t.nbytes


def is_host(t: torch.Tensor) -> bool:
    return t.is_cpu


def _pinned(t: torch.Tensor) -> bool:
    try:
        return bool(t.is_pinned())
    except RuntimeError:  # a build without an accelerator runtime
        return False


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        for v in value:
            if isinstance(v, torch.Tensor):
                return v
    return None


def _transfer(src: torch.Tensor, dst: torch.Tensor, non_blocking: bool) -> list[OpEvent]:
    """Events of writing ``src`` into ``dst``: a host-device copy and/or a cast (both, for ``.to(cuda, bf16)``)."""
    events: list[OpEvent] = []
    src_host, dst_host = is_host(src), is_host(dst)
    if src_host != dst_host:
        host_side = src if src_host else dst
        events.append(
            OpEvent(
                "copy",
                nbytes(dst),
                src,
                direction="h2d" if src_host else "d2h",
                pinned=_pinned(host_side),
                blocking=not non_blocking,
                to_meta=dst.is_meta,
            )
        )
    if src.dtype != dst.dtype:
        events.append(OpEvent("cast", nbytes(dst), src))
    return events


# -- copies and casts --------------------------------------------------------------------------------------


@_register("_to_copy")
def _to_copy(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    src = args[0]
    if not isinstance(src, torch.Tensor) or not isinstance(out, torch.Tensor):
        return []
    return _transfer(src, out, bool(kwargs.get("non_blocking", False)))


@_register("copy_")
def _copy_(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    dst, src = args[0], args[1]
    if not isinstance(src, torch.Tensor) or not isinstance(dst, torch.Tensor):
        return []
    non_blocking = bool(args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
    return _transfer(src, dst, non_blocking)


@_register("_copy_from", "_copy_from_and_resize")
def _copy_from(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    src, dst = args[0], args[1]
    if not isinstance(src, torch.Tensor) or not isinstance(dst, torch.Tensor):
        return []
    non_blocking = bool(args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
    return _transfer(src, dst, non_blocking)


# -- syncs: the host waits for the device to produce a value -----------------------------------------------


@_register("_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive")
@_register("is_nonzero", "equal", "histc")
def _data_dependent(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    """Ops whose result (a Python scalar, or an output size) depends on device data: the host must wait."""
    t = _first_tensor(args)
    return [OpEvent("sync")] if t is not None and not is_host(t) else []


@_register("repeat_interleave")
def _repeat_interleave(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    t = _first_tensor(args)
    sized = kwargs.get("output_size") is not None
    return [OpEvent("sync")] if t is not None and not is_host(t) and not sized else []


@_register("index", "index_put_", "index_put")
def _index(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    """Indexing with a boolean mask on the device runs a hidden ``nonzero``."""
    t = args[0] if args else None
    indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
    if not isinstance(t, torch.Tensor) or is_host(t) or not isinstance(indices, list | tuple):
        return []
    masked = any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    return [OpEvent("sync")] if masked else []


# -- heavy compute ------------------------------------------------------------------------------------------


def _compute(out: Any, flops: Callable[[], float]) -> list[OpEvent]:
    """Heavy compute on the host: an event with its FLOPs (counted lazily). On the accelerator: nothing."""
    t = _first_tensor(out)
    if t is None or not t.is_cpu:
        return []
    return [OpEvent("compute", t.nbytes, host=True, flops=float(flops()))]


def _mm_flops(a: torch.Tensor, b: torch.Tensor) -> float:
    """2·M·K·N for (…, M, K) @ (…, K, N), batch dims included."""
    batch = math.prod(a.shape[:-2]) if a.dim() > 2 else 1
    return 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


@_register("mm", "bmm", "_int_mm", "matmul", "_scaled_mm")
def _matmul(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    return _compute(out, lambda: _pair_flops(args[0], args[1]))


def _pair_flops(a: Any, b: Any) -> float:
    ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() >= 2 and b.dim() >= 2
    return _mm_flops(a, b) if ok else 0.0


@_register("addmm", "baddbmm", "addbmm")
def _addmatmul(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    return _compute(out, lambda: _pair_flops(args[1], args[2]))


@_register("linear")
def _linear(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    return _compute(out, lambda: 2.0 * args[0].numel() * args[1].shape[0])


@_register("convolution", "_convolution", "convolution_overrideable", "cudnn_convolution", "mkldnn_convolution")
def _conv(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    """Each output element is a dot product over C_in/groups × kernel: the weight's per-filter size."""
    return _compute(out, lambda: _conv_flops(args[1], _first_tensor(out)))


def _conv_flops(w: Any, out: torch.Tensor | None) -> float:
    per_output = math.prod(w.shape[1:]) if isinstance(w, torch.Tensor) and w.dim() > 1 else 0
    return 2.0 * (out.numel() if out is not None else 0) * per_output


@_register(
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math",
    "scaled_dot_product_attention",
)
def _sdpa(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    """Q·Kᵀ and P·V: 4·(…·L·E)·S for q (…, L, E) and k (…, S, E)."""
    return _compute(out, lambda: 4.0 * args[0].numel() * args[1].shape[-2])


@_register("_flash_attention_forward", "_efficient_attention_forward")
def _attention_blhe(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    """The kernels under SDPA take (B, L, H, E): the key length is dim 1."""
    return _compute(out, lambda: 4.0 * args[0].numel() * args[1].shape[1])


# -- which attention kernel ran ------------------------------------------------------------------------------

# SDPA's backends as the dispatcher sees them (below ``scaled_dot_product_attention``, which picks one)
ATTENTION_KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_flash_attention_for_cpu": "cpu_flash",
    "_scaled_dot_product_fused_attention_overrideable": "fused",
}
# attention libraries that register their kernels as torch ops: namespace -> kernel
ATTENTION_NAMESPACES = {
    "flash_attn": "flash_attn",
    "flash_attn_3": "flash_attn",
    "sageattention": "sage",
    "sage": "sage",
}
MATH_MIN_SIDE = 64  # a softmax over a (…, L, S) matrix with both sides this long is an attention score matrix


def _named_attention(kernel: str, compute: Handler | None) -> Handler:
    def handle(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
        events = [OpEvent("attention", kernel=kernel)]
        return events + compute(args, kwargs, out) if compute is not None else events

    return handle


for _name, _kernel in ATTENTION_KERNELS.items():
    _packet = getattr(torch.ops.aten, _name, None)
    if _packet is not None:
        REGISTRY[_packet] = _named_attention(_kernel, REGISTRY.get(_packet))


@_register("_softmax", "_safe_softmax")
def _softmax(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> list[OpEvent]:
    """SDPA's math backend (``_safe_softmax``) and hand-written attention (``softmax(q @ k.T)``) materialise the
    score matrix; a fused kernel never does. A softmax over a large (…, L, S) matrix is that matrix."""
    t = _first_tensor(out)
    if t is None or t.dim() < 3 or t.shape[-1] < MATH_MIN_SIDE or t.shape[-2] < MATH_MIN_SIDE:
        return []
    return [OpEvent("attention", t.nbytes, kernel="math")]


def _custom_attention(func: Any) -> Handler | None:
    """Attention kernels of other libraries, known by their op namespace (``flash_attn::_flash_attn_forward``)."""
    kernel = ATTENTION_NAMESPACES.get(str(getattr(func, "namespace", "")))
    if kernel is None or "backward" in str(getattr(func, "__name__", "")):
        return None
    return _named_attention(kernel, None)
