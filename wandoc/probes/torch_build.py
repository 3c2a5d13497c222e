"""Which torch wheel is installed, read from its files: importing torch would take seconds, initialise CUDA,
and crash the doctor on exactly the broken installs it is meant to diagnose.

The same files say which cuDNN a CUDA build loads (the nvidia-cudnn package's version on Linux, the version
resource of the bundled DLL on Windows), whether a ROCm build has its HIP runtime, and whether ZLUDA's
replacements sit where NVIDIA's libraries were.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import os
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from wandoc.facts import TorchFacts

_WANTED = ("__version__", "cuda", "hip")


def parse_version_py(text: str) -> dict[str, str | None]:
    """``__version__``, ``cuda`` and ``hip`` from the text of torch/version.py, by reading literals only."""
    found: dict[str, str | None] = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if (
            isinstance(target, ast.Name)
            and target.id in _WANTED
            and isinstance(value, ast.Constant)
            and (value.value is None or isinstance(value.value, str))
        ):
            found[target.id] = value.value
    return found


def version_tuple(version: str) -> list[int]:
    """The leading release numbers: "2.6.0+cu124" -> [2, 6, 0], "2.7.0.dev20250101" -> [2, 7, 0]."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    parts = [int(p) for p in match.group(0).split(".")] if match else []
    return parts[:3]


def cuda_float(cuda: str | None) -> float:
    """The CUDA version a wheel was built for, as a number: "12.4" -> 12.4; unreadable -> 0."""
    match = re.match(r"(\d+)\.(\d+)", cuda or "")
    return float(f"{match.group(1)}.{match.group(2)}") if match else 0.0


def facts_from_version_py(text: str, location: str = "") -> TorchFacts:
    values = parse_version_py(text)
    version = values.get("__version__") or ""
    cuda, hip = values.get("cuda"), values.get("hip")
    return TorchFacts(
        installed=True,
        version=version,
        version_tuple=version_tuple(version),
        cuda_build=cuda_float(cuda),
        hip_build=hip or "",
        is_cpu_build="+cpu" in version or (cuda is None and hip is None),
        location=location,
    )


def _version_py_from_metadata() -> tuple[Path, str] | None:
    try:
        dist = md.distribution("torch")
    except md.PackageNotFoundError:
        return None
    # Where RECORD lists torch/version.py at all, it lists it at this same path; reading RECORD (15,000 lines,
    # a path object each) to confirm it would cost more than the rest of the doctor together.
    path = Path(str(dist.locate_file("torch/version.py")))
    return path, str(dist.version or "")


def _version_py_from_path() -> Path | None:
    """A source or editable checkout without an installed distribution; find_spec does not import it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "version.py"
        if candidate.is_file():
            return candidate
    return None


# -- cuDNN, HIP and ZLUDA, from torch/lib and installed metadata ---------------------------------------------

MAX_LIB_ENTRIES = 5000
MAX_DLL_BYTES = 32 * 1024 * 1024  # cudnn64_9.dll is a loader of a few hundred KB; the big engines are elsewhere
_VS_FIXEDFILEINFO = struct.pack("<I", 0xFEEF04BD)
ZLUDA_MAX_CUBLAS_BYTES = 10 * 1024 * 1024  # NVIDIA's cublas64_11.dll is tens of MB; ZLUDA's stand-in is tiny


def cudnn_number(major: int, minor: int, patch: int) -> int:
    """cuDNN's own encoding, as torch.backends.cudnn.version() returns it: 9.10.2 -> 91002, 8.9.2 -> 8902."""
    return major * (10000 if major >= 9 else 1000) + minor * 100 + patch


def cudnn_from_version(version: str) -> int:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version.strip())
    return cudnn_number(*(int(g) for g in match.groups())) if match else 0


def dll_file_version(data: bytes) -> tuple[int, int, int, int] | None:
    """A Windows DLL's file version from its VS_FIXEDFILEINFO (signature 0xFEEF04BD, then the struct version and
    the version's two 32-bit halves), found in its bytes without a PE parser."""
    at = data.find(_VS_FIXEDFILEINFO)
    if at < 0 or at + 16 > len(data):
        return None
    ms, ls = struct.unpack_from("<II", data, at + 8)
    return ms >> 16, ms & 0xFFFF, ls >> 16, ls & 0xFFFF


def _lib_names(lib: Path) -> list[tuple[str, int]]:
    """(name, size) of the files in torch/lib, bounded."""
    out: list[tuple[str, int]] = []
    try:
        with os.scandir(lib) as it:
            for entry in it:
                if len(out) >= MAX_LIB_ENTRIES:
                    break
                try:
                    out.append((entry.name, entry.stat().st_size))
                except OSError:
                    out.append((entry.name, -1))
    except OSError:
        return []
    return out


def cudnn_from_metadata(cuda_major: int) -> tuple[int, str]:
    """The nvidia-cudnn-cuXX wheel that torch's CUDA major version pulls in (Linux wheels depend on it)."""
    for name in (f"nvidia-cudnn-cu{cuda_major}", "nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11"):
        try:
            version = str(md.distribution(name).version or "")
        except md.PackageNotFoundError:
            continue
        number = cudnn_from_version(version)
        if number:
            return number, f"{name} {version}"
    return 0, ""


def cudnn_from_lib(lib: Path, names: Sequence[tuple[str, int]]) -> tuple[int, str]:
    """The cuDNN torch bundles: a versioned .so name, or the version resource of cudnn64_N.dll (Windows)."""
    for name, _ in names:
        match = re.fullmatch(r"libcudnn\.so\.(\d+)\.(\d+)\.(\d+)", name)
        if match:
            return cudnn_number(*(int(g) for g in match.groups())), f"torch/lib/{name}"
    dlls = sorted((n for n, size in names if re.fullmatch(r"cudnn64_\d+\.dll", n, re.I) and 0 < size <= MAX_DLL_BYTES))
    for name in reversed(dlls):
        try:
            version = dll_file_version((lib / name).read_bytes())
        except OSError:
            continue
        if version and version[0] >= 7:
            return cudnn_number(*version[:3]), f"torch/lib/{name} version resource ({'.'.join(map(str, version))})"
    return 0, ""


def hip_runtime_found(names: Sequence[tuple[str, int]], environ_rocm: str | None) -> bool:
    """ROCm wheels bundle libamdhip64 in torch/lib; a ROCm install has it under $ROCM_PATH/lib or /opt/rocm/lib."""
    if any(re.match(r"(lib)?amdhip64", n, re.I) for n, _ in names):
        return True
    for folder in (environ_rocm, "/opt/rocm"):
        if folder:
            try:
                if any(p.name.startswith("libamdhip64") for p in Path(folder, "lib").iterdir()):
                    return True
            except OSError:
                continue
    return False


def zluda_evidence(names: Sequence[tuple[str, int]]) -> str:
    """Why torch/lib looks patched for ZLUDA: its patchers copy ZLUDA's cublas/cusparse/nvrtc over NVIDIA's DLLs
    (some keep the original NVRTC as nvrtc_cuda.dll)."""
    by_name = {n.lower(): size for n, size in names}
    if "nvrtc_cuda.dll" in by_name:
        return "torch/lib/nvrtc_cuda.dll is there (ZLUDA's patchers keep NVIDIA's NVRTC under that name)"
    for name in ("cublas64_11.dll", "cublas64_12.dll"):
        size = by_name.get(name, -1)
        if 0 <= size < ZLUDA_MAX_CUBLAS_BYTES:
            return f"torch/lib/{name} is {size / 2**20:.1f} MiB (ZLUDA's stand-in; NVIDIA's is tens of MB)"
    named = sorted(n for n in by_name if "zluda" in n)
    return f"torch/lib/{named[0]}" if named else ""


def zluda_cache_found(local_app_data: str | None) -> bool | None:
    """Whether ZLUDA has compiled kernels before: it keeps them in a database under %LOCALAPPDATA%."""
    if not local_app_data:
        return None
    try:
        return any(p.suffix == ".db" for p in Path(local_app_data, "ZLUDA", "ComputeCache").iterdir())
    except OSError:
        return False


def _lib_facts(facts: TorchFacts, environ: Mapping[str, str]) -> None:
    lib = Path(facts.location) / "lib"
    names = _lib_names(lib)
    if facts.cuda_build > 0:
        # a copy bundled in torch/lib (Windows wheels, Linux wheels of old) is the one torch loads
        facts.cudnn_version, facts.cudnn_from = cudnn_from_lib(lib, names)
        if not facts.cudnn_version:
            facts.cudnn_version, facts.cudnn_from = cudnn_from_metadata(int(facts.cuda_build))
        facts.zluda = zluda_evidence(names)
        if facts.zluda:
            facts.zluda_cache = zluda_cache_found(environ.get("LOCALAPPDATA"))
    if facts.hip_build:
        facts.hip_runtime = hip_runtime_found(names, environ.get("ROCM_PATH"))


def probe_torch() -> TorchFacts:
    try:
        found = _version_py_from_metadata()
        meta_version = ""
        if found is not None:
            path, meta_version = found
        else:
            located = _version_py_from_path()
            if located is None:
                return TorchFacts(installed=False)
            path = located
        location = str(path.parent)
        if not path.is_file():
            return TorchFacts(
                installed=True,
                version=meta_version,
                version_tuple=version_tuple(meta_version),
                location=location,
                error=f"torch {meta_version} is registered but {path} is missing (a broken or partial install)",
            )
        facts = facts_from_version_py(path.read_text(encoding="utf-8", errors="replace"), location)
        try:
            _lib_facts(facts, os.environ)
        except Exception as exc:  # the build is known; what its libraries say is extra
            facts.error = f"could not read torch/lib: {type(exc).__name__}: {exc}"
        return facts
    except Exception as exc:
        return TorchFacts(error=f"could not read the torch build: {type(exc).__name__}: {exc}")
