"""Import torch for real, in a child process, and do one tiny matmul on the GPU (``--deep``).

Reading the wheel's files says what was installed; only an import says whether it loads (a missing DLL on
Windows, a driver too old for the wheel's CUDA, a card the wheel has no kernels for). A child process keeps
a crash or a hang out of the doctor and leaves its own process free of CUDA.

The child must import the user's torch and nothing of the checkout: ``python -c`` puts the current folder first
on the import path, so a ``json.py`` or ``torch.py`` in the checkout (where the README says to run the check)
would run. It starts with ``-P`` (no unsafe path first) in an empty folder of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

from wandoc.facts import TorchDeep

MARKER = "WANDOC_TORCH_DEEP "
# compiled attention extensions: imported after torch, because one built for another torch, CUDA or Python
# fails only there ("undefined symbol"), and the code that uses it then falls back or stops
ATTENTION_MODULES = ("flash_attn", "flash_attn_interface", "sageattention")

SCRIPT = """
import importlib.util, json, sys, time
out = {"import_ok": False}
def emit():
    sys.stdout.write("\\n" + MARKER + json.dumps(out) + "\\n")
    sys.stdout.flush()
try:
    import torch
except BaseException as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)
    emit()
    raise SystemExit(0)
out["import_ok"] = True
try:
    out["cudnn_version"] = int(torch.backends.cudnn.version() or 0)
except BaseException:
    pass
imports = {}
for name in ATTENTION_MODULES:
    try:
        if importlib.util.find_spec(name) is None:
            continue
        __import__(name)
        imports[name] = "ok"
    except BaseException as exc:
        imports[name] = (type(exc).__name__ + ": " + str(exc))[:300]
out["attention_imports"] = imports
try:
    out["cuda_available"] = bool(torch.cuda.is_available())
    if out["cuda_available"]:
        out["device_count"] = int(torch.cuda.device_count())
        out["device_name"] = str(torch.cuda.get_device_name(0))
        out["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
        a = torch.randn(256, 256, device="cuda")
        b = torch.randn(256, 256, device="cuda")
        (a @ b).sum().item()
        t0 = time.perf_counter()
        c = a @ b
        torch.cuda.synchronize()
        out["matmul_ms"] = (time.perf_counter() - t0) * 1000.0
        ref = a.cpu() @ b.cpu()
        out["matmul_ok"] = bool(torch.allclose(c.cpu(), ref, rtol=1e-2, atol=1e-1))
except BaseException as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)
emit()
""".replace("MARKER", repr(MARKER)).replace("ATTENTION_MODULES", repr(ATTENTION_MODULES))

_FIELDS = set(TorchDeep.model_fields) - {"ran", "seconds"}


def last_meaningful_line(text: str) -> str:
    """The line that names the failure: the last non-blank one that is not traceback scaffolding."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("File ", "Traceback ", "^", "~")) or set(line) <= set("^~ "):
            continue
        return line
    return ""


def parse_output(stdout: str) -> dict[str, object] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER) :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def probe_torch_deep(timeout: float = 90.0, python: str = sys.executable) -> TorchDeep:
    deep = TorchDeep(ran=True)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="wandoc-deep-") as empty:
            proc = subprocess.run(
                [python, "-P", "-c", SCRIPT],
                cwd=empty,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
    except subprocess.TimeoutExpired:
        deep.error = f"timed out after {timeout:g} s (importing torch or initialising CUDA hung)"
        deep.seconds = time.perf_counter() - start
        return deep
    except Exception as exc:
        deep.error = f"could not start {python}: {type(exc).__name__}: {exc}"
        deep.seconds = time.perf_counter() - start
        return deep
    deep.seconds = time.perf_counter() - start
    try:
        data = parse_output(proc.stdout)
        if data is None:
            why = last_meaningful_line(proc.stderr) or last_meaningful_line(proc.stdout)
            deep.error = why or f"the torch check exited with code {proc.returncode} and printed nothing"
            return deep
        fields = {k: v for k, v in data.items() if k in _FIELDS}
        return TorchDeep.model_validate({**fields, "ran": True, "seconds": deep.seconds})
    except Exception as exc:
        deep.error = f"unreadable result of the torch check: {type(exc).__name__}: {exc}"
    return deep
