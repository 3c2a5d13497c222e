"""The operating system, the Python running the doctor, the user's shell, and the environment.

The shell matters because every env-var fix is printed in the syntax of the shell the user launches from:
``set X=1`` pasted into PowerShell silently does nothing.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PureWindowsPath

from wandoc.facts import EnvFacts, PlatformFacts

REDACTED = "<redacted>"
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE")

# Process names of shells, as psutil reports them (Windows names end in .exe).
_SHELL_NAMES = {
    "cmd": "cmd",
    "powershell": "powershell",
    "pwsh": "powershell",
    "bash": "bash",
    "sh": "bash",
    "dash": "bash",
    "ksh": "bash",
    "zsh": "zsh",
    "fish": "fish",
}
_ANCESTORS_TO_SCAN = 6  # python is often started through a launcher or a venv shim; the shell sits above those


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def probe_env(environ: Mapping[str, str]) -> EnvFacts:
    """Every variable, so rules can judge any of them; secrets never leave the machine in a shared report."""
    try:
        return EnvFacts(vars={str(k): REDACTED if is_secret_name(str(k)) else str(v) for k, v in environ.items()})
    except Exception:
        return EnvFacts()


def is_wsl(proc_version: str, environ: Mapping[str, str]) -> bool:
    """WSL2 kernels say "microsoft" in /proc/version; WSL also sets WSL_DISTRO_NAME in every shell."""
    return "microsoft" in proc_version.lower() or bool(environ.get("WSL_DISTRO_NAME"))


def _shell_of_process(name: str) -> str | None:
    stem = name.lower().strip()
    if stem.endswith(".exe"):
        stem = stem[:-4]
    return _SHELL_NAMES.get(stem)


def _ps_module_path_has_user_dir(environ: Mapping[str, str]) -> bool:
    """PowerShell adds the user's ``Documents\\...\\Modules`` to PSModulePath; cmd has only the system entries.

    Not proof (a cmd started from PowerShell inherits it), so the process tree is asked first.
    """
    value = environ.get("PSModulePath", "")
    profile = environ.get("USERPROFILE", "").rstrip("\\/").lower()
    for entry in value.split(";"):
        low = entry.lower()
        if not low:
            continue
        if profile and low.startswith(profile + "\\"):
            return True
        if "documents" in (p.lower() for p in PureWindowsPath(entry).parts):
            return True
    return False


def shell_for(os_name: str, environ: Mapping[str, str], ancestors: Sequence[str] = ()) -> str:
    """The shell a fix should be written for.

    ``ancestors`` are the process names above this process, nearest first: the shell that launched us is the
    most direct evidence. Without it, Windows falls back to PSModulePath and then cmd (what ComSpec names),
    and POSIX to the basename of $SHELL (the login shell), with bash syntax for any sh-like shell.
    """
    for name in ancestors:
        shell = _shell_of_process(name)
        if shell:
            return shell
    if os_name == "Windows":
        if _ps_module_path_has_user_dir(environ):
            return "powershell"
        if environ.get("SHELL"):  # Git Bash / MSYS set SHELL; cmd and PowerShell do not
            return _shell_of_process(Path(environ["SHELL"]).name) or "bash"
        comspec = environ.get("ComSpec") or environ.get("COMSPEC") or ""
        return _shell_of_process(PureWindowsPath(comspec).name) or "cmd"
    return _shell_of_process(Path(environ.get("SHELL", "")).name) or "bash"


def _ancestor_names() -> list[str]:
    try:
        import psutil

        names: list[str] = []
        proc = psutil.Process(os.getpid()).parent()
        while proc is not None and len(names) < _ANCESTORS_TO_SCAN:
            names.append(proc.name())
            proc = proc.parent()
        return names
    except Exception:
        return []


def _read_proc_version() -> str:
    try:
        with open("/proc/version", encoding="utf-8", errors="replace") as f:
            return f.read(4096)
    except OSError:
        return ""


def under_rosetta() -> bool:
    """macOS says whether this process is translated (Rosetta 2): sysctl ``sysctl.proc_translated`` is 1."""
    try:
        import ctypes

        libc = ctypes.CDLL("/usr/lib/libc.dylib")
        value = ctypes.c_int(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if libc.sysctlbyname(b"sysctl.proc_translated", ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            return False  # the name is unknown on Intel Macs: nothing is translated there
        return value.value == 1
    except Exception:
        return False


def probe_platform(environ: Mapping[str, str]) -> PlatformFacts:
    facts = PlatformFacts()
    try:
        facts.os = platform.system()
        facts.release = platform.release()
        facts.machine = platform.machine()
        facts.python = platform.python_version()
        facts.python_executable = sys.executable
        facts.wsl = facts.os == "Linux" and is_wsl(_read_proc_version(), environ)
        facts.rosetta = facts.os == "Darwin" and facts.machine == "x86_64" and under_rosetta()
        facts.shell = shell_for(facts.os, environ, _ancestor_names())
    except Exception as exc:
        facts.error = f"{type(exc).__name__}: {exc}"
    return facts
