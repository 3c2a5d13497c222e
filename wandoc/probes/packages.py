"""The attention and compile stack, from installed metadata only.

Importing flash_attn or xformers loads CUDA extensions (seconds, and a crash when they were built for another
torch); the doctor only needs to know what is installed and which version.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util

from wandoc.facts import PackageFacts, PackagesFacts

# field -> distribution names to try, in order
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "flash_attn": ("flash-attn", "flash_attn"),
    "flash_attn_3": ("flash_attn_3", "flash-attn-3"),
    "sageattention": ("sageattention",),
    "xformers": ("xformers",),
    "triton": ("triton", "triton-windows", "pytorch-triton"),
    "diffusers": ("diffusers",),
    "accelerate": ("accelerate",),
}
# FlashAttention 3 is often built from source and leaves only its module behind.
MODULE_FALLBACK: dict[str, str] = {"flash_attn_3": "flash_attn_interface"}


def package_facts(names: tuple[str, ...], module: str | None = None) -> PackageFacts:
    try:
        for name in names:
            try:
                dist = md.distribution(name)
            except md.PackageNotFoundError:
                continue
            return PackageFacts(installed=True, version=str(dist.version or ""), location=str(dist.locate_file("")))
        if module:
            spec = importlib.util.find_spec(module)  # a top-level name: found, not imported
            if spec is not None:
                return PackageFacts(installed=True, location=str(spec.origin or ""))
        return PackageFacts()
    except Exception as exc:
        return PackageFacts(error=f"{type(exc).__name__}: {exc}")


def probe_packages() -> PackagesFacts:
    facts = PackagesFacts()
    for field, names in DISTRIBUTIONS.items():
        setattr(facts, field, package_facts(names, MODULE_FALLBACK.get(field)))
    return facts
