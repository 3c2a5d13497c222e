"""The attention and compile stack, from installed metadata only.

Importing flash_attn or xformers loads CUDA extensions (seconds, and a crash when they were built for another
torch); the doctor only needs to know what is installed, which version, and what it was built for. Prebuilt
attention wheels say that in their local version ("2.7.4.post1+cu12torch2.6cxx11abiFALSE") or, when pip
installed them from a URL, in the wheel's file name that pip records in direct_url.json; xformers pins the
torch it was built against in its requirements.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata as md
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

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
# packages with compiled kernels, whose build must match torch's
BUILT_AGAINST_TORCH = ("flash_attn", "flash_attn_3", "sageattention", "xformers")
MAX_SOURCE_BYTES = 2 * 1024 * 1024
FA3_RETURN_CHANGE = "3.0.0"  # the first FA3 release numbered after it stopped returning (out, softmax_lse)

_LABEL_CUDA = re.compile(r"(?<![a-z])cu(\d{2,3})(?!\d)")
_LABEL_TORCH = re.compile(r"torch(\d+)\.(\d+)")


def build_label(version: str, url: str = "") -> str:
    """The local version label ("cu12torch2.6cxx11abiFALSE") of an installed version, else of the wheel's file
    name in the URL it was installed from."""
    if "+" in version:
        return version.split("+", 1)[1]
    name = url.rsplit("/", 1)[-1]
    match = re.match(r"[^-]+-[^-+]+\+([^-]+)-", name)
    return match.group(1) if match else ""


def parse_label(label: str) -> tuple[str, float]:
    """torch major.minor and the CUDA version a build label names: "cu124torch2.5" -> ("2.5", 12.4); "cu12" -> 12.0."""
    low = label.lower()
    torch = _LABEL_TORCH.search(low)
    cuda = _LABEL_CUDA.search(low)
    built_cuda = 0.0
    if cuda:
        digits = cuda.group(1)
        built_cuda = float(digits) if len(digits) == 2 else float(f"{digits[:2]}.{digits[2:]}")
    return (f"{int(torch.group(1))}.{int(torch.group(2))}" if torch else ""), built_cuda


def pinned_torch(requires: list[str] | None) -> str:
    """torch major.minor from an exact pin in the requirements ("torch==2.6.0"), as xformers wheels carry."""
    for req in requires or []:
        match = re.match(r"\s*torch\s*==\s*(\d+)\.(\d+)", req)
        if match and ";" not in req.split("==", 1)[0]:
            return f"{match.group(1)}.{match.group(2)}"
    return ""


def _installed_url(dist: Any) -> str:
    try:
        text = dist.read_text("direct_url.json")
        data = json.loads(text) if text else {}
        return str(data.get("url", "")) if isinstance(data, dict) else ""
    except Exception:
        return ""


def package_facts(names: tuple[str, ...], module: str | None = None) -> PackageFacts:
    try:
        for name in names:
            try:
                dist = md.distribution(name)
            except md.PackageNotFoundError:
                continue
            version = str(dist.version or "")
            facts = PackageFacts(name=name, installed=True, version=version, location=str(dist.locate_file("")))
            facts.build_label = build_label(version, _installed_url(dist))
            facts.built_torch, facts.built_cuda = parse_label(facts.build_label)
            if not facts.built_torch:
                facts.built_torch = pinned_torch(dist.requires)
            return facts
        if module:
            spec = importlib.util.find_spec(module)  # a top-level name: found, not imported
            if spec is not None:
                return PackageFacts(name=module, installed=True, location=str(spec.origin or ""))
        return PackageFacts()
    except Exception as exc:
        return PackageFacts(error=f"{type(exc).__name__}: {exc}")


def varlen_returns(source: str) -> str:
    """What ``FlashAttnVarlenFunc.forward`` returns when no one asks for the LSE, read from FA3's source:
    "tuple" when a return gives (out, softmax_lse) unconditionally, "tensor" when it gives ``out`` (alone or
    unless ``return_softmax``), "" when the class is not there."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "FlashAttnVarlenFunc":
            forward = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
            if forward is None:
                return ""
            returns = [r.value for r in ast.walk(forward) if isinstance(r, ast.Return) and r.value is not None]
            if any(isinstance(v, ast.Tuple) for v in returns):
                return "tuple"
            return "tensor" if returns else ""
    return ""


def _final_release_at_least(version: str, floor: str) -> bool:
    """``version`` is a final release (no a/b/rc/dev part) at or above ``floor``."""
    public = version.split("+", 1)[0]
    if not re.fullmatch(r"\d+(\.\d+)*(\.post\d+)?", public):
        return False
    numbers = [int(p) for p in public.split(".post")[0].split(".")]
    wanted = [int(p) for p in floor.split(".")]
    return numbers + [0] * (len(wanted) - len(numbers)) >= wanted


def fa3_returns(fa3: PackageFacts) -> tuple[str, str]:
    """What the installed FA3's varlen function returns, and how the doctor knows."""
    if not fa3.installed:
        return "", ""
    try:
        spec = importlib.util.find_spec("flash_attn_interface")
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        if origin is not None and origin.suffix == ".py" and origin.stat().st_size <= MAX_SOURCE_BYTES:
            found = varlen_returns(origin.read_text(encoding="utf-8", errors="replace"))
            if found:
                return found, f"the installed {origin.name}"
    except (OSError, SyntaxError, ValueError, ImportError):
        pass
    if _final_release_at_least(fa3.version, FA3_RETURN_CHANGE):
        return "tensor", f"version {fa3.version} (released after the change)"
    return "", ""


def probe_packages() -> PackagesFacts:
    facts = PackagesFacts()
    for field, names in DISTRIBUTIONS.items():
        setattr(facts, field, package_facts(names, MODULE_FALLBACK.get(field)))
    with contextlib.suppress(Exception):  # a fact the rules can do without
        facts.fa3_varlen_returns, facts.fa3_varlen_returns_from = fa3_returns(facts.flash_attn_3)
    return facts
