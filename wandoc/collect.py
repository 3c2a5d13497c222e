"""Run every probe and assemble the facts tree; a probe that crashes anyway becomes a recorded error.

The probes that wait (NVML start-up, git, disks, package metadata) run side by side in threads; the code walk,
which only computes, runs in the calling thread, and so does the caller's own work (``meanwhile``: the rule
files, for ``check``). Two threads that both compute only trade the interpreter lock back and forth, which costs
CPU time and gains nothing. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from wandoc import __version__
from wandoc.facts import (
    AmdFacts,
    CheckpointFacts,
    EnvFacts,
    Estimate,
    Facts,
    GitFacts,
    NvmlFacts,
    PackagesFacts,
    ParallelFacts,
    PlatformFacts,
    RepoFacts,
    StorageFacts,
    SystemFacts,
    TorchFacts,
)

T = TypeVar("T")


@dataclass
class Request:
    """What the user asked the doctor to look at."""

    repo: Path | None = None
    script: str = "generate.py"
    ckpt_dir: Path | None = None
    compare: str | None = None
    generate_args: Sequence[str] = ()
    deep: bool = False
    deep_timeout: float = 90.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def _safe(name: str, errors: list[str], fn: Callable[[], T], fallback: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as exc:  # probes promise not to raise; this keeps the promise if one breaks it
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
        return fallback()


def _ckpt_dir(req: Request, repo: RepoFacts) -> Path | None:
    """--ckpt-dir, else the --ckpt_dir the run will get: relative to the checkout, as generate.py runs there (or
    to this folder, where the user may have meant it), and the checkout's when it is in neither."""
    if req.ckpt_dir is not None:
        return req.ckpt_dir
    value = repo.effective.get("ckpt_dir")
    if not isinstance(value, str) or not value:
        return None
    p = Path(value)
    if p.is_absolute() or not repo.path:
        return p
    in_checkout = Path(repo.path) / p
    return p if p.exists() and not in_checkout.exists() else in_checkout


def _storage(ckpt: CheckpointFacts, sample: bool) -> StorageFacts:
    """The storage under the checkpoints; with ``sample`` (``--deep``), a short read of the largest file."""
    from wandoc.probes import storage

    root = Path(ckpt.dir)
    base = root.parent if root.is_file() else root
    readable = [f for f in ckpt.files if f.bytes > 0]
    largest = base / max(readable, key=lambda f: f.bytes).path if readable else None
    return storage.probe_storage(root, largest, sample=sample)


def collect(req: Request, meanwhile: Callable[[], object] | None = None) -> Facts:
    """The facts of this machine and checkout; ``meanwhile`` runs in this thread while the threaded probes wait
    (an exception from it propagates once they are done)."""
    from wandoc.code.probe import probe_repo
    from wandoc.estimate import estimate
    from wandoc.probes import amd, checkpoints, git_compare, gpu, packages, platform, system, torch_build
    from wandoc.probes.parallel import probe_parallel

    errors: list[str] = []
    env = req.environ
    with ThreadPoolExecutor(max_workers=6) as pool:
        f_nvml = pool.submit(_safe, "nvml", errors, lambda: gpu.probe_nvml(env), NvmlFacts)
        f_sys = pool.submit(_safe, "system", errors, system.probe_system, SystemFacts)
        f_amd = pool.submit(_safe, "amd", errors, amd.probe_amd, AmdFacts)
        f_torch = pool.submit(_safe, "torch", errors, torch_build.probe_torch, TorchFacts)
        f_pkgs = pool.submit(_safe, "packages", errors, packages.probe_packages, PackagesFacts)
        f_git = pool.submit(
            _safe, "git", errors,
            lambda: git_compare.probe_git(req.repo, req.compare, req.script, list(req.generate_args)), GitFacts,
        )  # fmt: skip
        f_deep = None
        if req.deep:
            from wandoc.probes import torch_deep

            f_deep = pool.submit(
                _safe, "torch-deep", errors, lambda: torch_deep.probe_torch_deep(req.deep_timeout), lambda: None
            )
        plat = _safe("platform", errors, lambda: platform.probe_platform(env), PlatformFacts)
        env_facts = _safe("env", errors, lambda: platform.probe_env(env), EnvFacts)
        repo = _safe("repo", errors, lambda: probe_repo(req.repo, req.script, list(req.generate_args), env), RepoFacts)
        if meanwhile is not None:
            meanwhile()
        ckpt_dir = _ckpt_dir(req, repo)
        ckpt = _safe("checkpoints", errors, lambda: checkpoints.probe_checkpoints(ckpt_dir), CheckpointFacts)
        if ckpt.found:
            ckpt.storage = _safe("storage", errors, lambda: _storage(ckpt, req.deep), StorageFacts)
        if ckpt_dir is not None and req.ckpt_dir is None:
            ckpt.from_args = True  # the run's own --ckpt_dir: a folder it lacks stops the run as surely
        torch = f_torch.result()
        if f_deep is not None and (deep := f_deep.result()) is not None:
            torch.deep = deep
        facts = Facts(
            collected_at=datetime.now(UTC).isoformat(timespec="seconds"),
            wandoc_version=__version__,
            platform=plat,
            env=env_facts,
            system=f_sys.result(),
            nvml=f_nvml.result(),
            amd=f_amd.result(),
            torch=torch,
            packages=f_pkgs.result(),
            repo=repo,
            checkpoints=ckpt,
            git=f_git.result(),
        )
    facts.estimate = _safe("estimate", errors, lambda: estimate(facts.repo, facts.checkpoints), Estimate)
    facts.parallel = _safe("parallel", errors, lambda: probe_parallel(env, facts.repo, facts.nvml), ParallelFacts)
    facts.probe_errors = errors
    return facts


def load_facts_file(path: Path) -> Facts:
    """Recorded facts (``wandoc facts > FILE``), for replaying a user's machine anywhere."""
    from pydantic import ValidationError

    from wandoc.bounded import FileRefused, load_json
    from wandoc.errors import first_error

    try:
        data: Any = load_json(path)
    except FileRefused as exc:
        raise ValueError(f"{path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("facts"), dict):
        data = data["facts"]  # a whole `wandoc check --format json` report
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a facts object")
    schema = data.get("schema", "wandoc.facts/1")
    if schema != "wandoc.facts/1":
        raise ValueError(f"{path}: schema {schema!r}, expected 'wandoc.facts/1'")
    try:
        return Facts.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: {first_error(exc)}") from None
