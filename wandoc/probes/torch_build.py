"""Which torch wheel is installed, read from its files: importing torch would take seconds, initialise CUDA,
and crash the doctor on exactly the broken installs it is meant to diagnose.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import re
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
        return facts_from_version_py(path.read_text(encoding="utf-8", errors="replace"), location)
    except Exception as exc:
        return TorchFacts(error=f"could not read the torch build: {type(exc).__name__}: {exc}")
