"""Children for tests of hostile input: each runs under a memory limit and with a timeout, so a regression (a hang
on a FIFO, a parser eating memory, a run that never ends) fails the test instead of stalling CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WANRUN = [sys.executable, "-m", "wanrun"]
WANDOC = [sys.executable, "-m", "wandoc"]
TORCH_MEMORY = 4 << 30  # address space: torch maps about 1.5 GB at import
LIGHT_MEMORY = 1 << 30


def as_from_a_terminal() -> None:
    """In a POSIX child before it starts: SIGINT back to its default, as a command typed at a terminal has it. A
    shell starts a background job (a suite run with ``&``) with SIGINT ignored, which children inherit, and a
    process that starts with SIGINT ignored rightly leaves it so: a Ctrl-C test would then wait forever."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _limit(memory: int) -> Any:
    def apply() -> None:
        import resource

        as_from_a_terminal()
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply if os.name == "posix" else None


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for a child: this checkout first on the path, one thread for torch (2 cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    env.pop("WANRUN_PARENT_FD", None)
    return env


def run_limited(
    args: list[str], *, timeout: float, memory: int = LIGHT_MEMORY, **kw: Any
) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", child_env())
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, preexec_fn=_limit(memory), **kw)


def start_limited(args: list[str], *, memory: int = TORCH_MEMORY, **kw: Any) -> subprocess.Popen[str]:
    """A child to send signals to; the caller waits with a timeout and kills it in a ``finally``."""
    kw.setdefault("env", child_env())
    return subprocess.Popen(args, text=True, preexec_fn=_limit(memory), **kw)
