"""The machine probes: platform, env, system, NVML (faked: no GPU here), torch build and deep check, packages."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import textwrap
from importlib.metadata import PackagePath
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pynvml
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wandoc.probes import gpu, packages, system, torch_build, torch_deep
from wandoc.probes import platform as plat

# -- platform and env -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("os_name", "environ", "ancestors", "expected"),
    [
        ("Windows", {}, ["python.exe", "pwsh.exe"], "powershell"),
        ("Windows", {}, ["wandoc.exe", "python.exe", "powershell.exe"], "powershell"),
        ("Windows", {}, ["py.exe", "cmd.exe", "explorer.exe"], "cmd"),
        ("Windows", {}, ["python.exe", "bash.exe"], "bash"),
        (
            "Windows",
            {
                "USERPROFILE": r"C:\Users\ana",
                "PSModulePath": r"C:\Users\ana\Documents\WindowsPowerShell\Modules;C:\Program Files\WindowsPowerShell"
                r"\Modules",
            },
            [],
            "powershell",
        ),
        (
            "Windows",
            {"PSModulePath": r"D:\OneDrive\Documents\PowerShell\Modules;C:\WINDOWS\system32\WindowsPowerShell"},
            ["explorer.exe"],
            "powershell",
        ),
        (
            "Windows",
            {
                "USERPROFILE": r"C:\Users\ana",
                "PSModulePath": r"C:\Program Files\WindowsPowerShell\Modules;C:\WINDOWS\system32\WindowsPowerShell",
                "ComSpec": r"C:\WINDOWS\system32\cmd.exe",
            },
            [],
            "cmd",
        ),
        ("Windows", {"SHELL": "/usr/bin/bash"}, [], "bash"),
        ("Windows", {}, [], "cmd"),
        ("Linux", {"SHELL": "/usr/bin/zsh"}, [], "zsh"),
        ("Linux", {"SHELL": "/usr/local/bin/fish"}, [], "fish"),
        ("Linux", {"SHELL": "/bin/sh"}, [], "bash"),
        ("Linux", {"SHELL": "/bin/tcsh"}, [], "bash"),
        ("Linux", {}, [], "bash"),
        ("Darwin", {"SHELL": "/bin/zsh"}, ["python3.11", "make"], "zsh"),
        ("Linux", {"SHELL": "/bin/bash"}, ["python", "fish", "bash"], "fish"),
        ("Linux", {"SHELL": "/usr/bin/pwsh"}, [], "powershell"),
    ],
)
def test_shell_for(os_name: str, environ: dict[str, str], ancestors: list[str], expected: str) -> None:
    assert plat.shell_for(os_name, environ, ancestors) == expected


def test_wsl_detection() -> None:
    wsl = "Linux version 5.15.153.1-microsoft-standard-WSL2 (root@941d701f84f1) (gcc (GCC) 11.2.0)"
    native = "Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) (x86_64-linux-gnu-gcc-13)"
    assert plat.is_wsl(wsl, {})
    assert not plat.is_wsl(native, {})
    assert plat.is_wsl(native, {"WSL_DISTRO_NAME": "Ubuntu"})


def test_probe_platform_on_this_machine() -> None:
    facts = plat.probe_platform(os.environ)
    assert facts.error is None
    assert facts.os == platform.system()
    assert facts.python == platform.python_version()
    assert facts.python_executable == sys.executable
    assert facts.shell in {"cmd", "powershell", "bash", "zsh", "fish"}


def test_probe_platform_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> str:
        raise OSError("uname failed")

    monkeypatch.setattr(plat.platform, "system", boom)
    facts = plat.probe_platform({})
    assert facts.error is not None and "uname failed" in facts.error


def test_probe_env_redacts_secrets_and_keeps_the_rest() -> None:
    environ = {
        "HF_TOKEN": "hf_abc",
        "DASH_API_KEY": "sk-1",
        "aws_secret_access_key": "x",
        "DB_PASSWORD": "p",
        "MYSQL_PASSWD": "p",
        "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
        "BASIC_AUTH": "u:p",
        "SESSION_COOKIE": "c",
        "CUDA_VISIBLE_DEVICES": "0",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "WAN_COMPILE": "1",
    }
    before = dict(environ)
    facts = plat.probe_env(environ)
    assert environ == before
    secret = {"HF_TOKEN", "DASH_API_KEY", "aws_secret_access_key", "DB_PASSWORD", "MYSQL_PASSWD"}
    secret |= {"GOOGLE_APPLICATION_CREDENTIALS", "BASIC_AUTH", "SESSION_COOKIE"}
    for name, value in environ.items():
        assert facts.vars[name] == (plat.REDACTED if name in secret else value), name


# -- system -----------------------------------------------------------------------------------------------


def test_probe_system_on_this_machine() -> None:
    facts = system.probe_system()
    assert facts.error is None
    assert facts.cpu_count >= 1
    assert 0 < facts.ram_available_bytes <= facts.ram_total_bytes
    assert facts.swap_used_bytes <= max(facts.swap_total_bytes, facts.swap_used_bytes)


def test_probe_system_keeps_what_it_could_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Any:
        raise PermissionError("no /proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", refuse)
    facts = system.probe_system()
    assert facts.error is not None and "memory" in facts.error
    assert facts.ram_total_bytes == 0
    assert facts.cpu_count >= 1


def test_cpu_model_from_cpuinfo() -> None:
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 9 7950X 16-Core Processor\n"
    arm = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert system.cpu_model_from_cpuinfo(x86) == "AMD Ryzen 9 7950X 16-Core Processor"
    assert system.cpu_model_from_cpuinfo(arm) == "Raspberry Pi 4 Model B Rev 1.4"
    assert system.cpu_model_from_cpuinfo("") == ""


# -- CUDA_VISIBLE_DEVICES ---------------------------------------------------------------------------------

UUIDS = [
    "GPU-aaaa1111-0000-0000-0000-000000000000",
    "GPU-aaab2222-0000-0000-0000-000000000000",
    "GPU-bbbb3333-0000-0000-0000-000000000000",
]


@pytest.mark.parametrize(
    ("value", "expected", "error_has"),
    [
        (None, None, None),
        ("", [], None),
        ("  ", [], None),
        ("-1", [], None),
        ("NoDevFiles", [], None),
        ("0", [0], None),
        ("2,0", [2, 0], None),
        ("0, 1", [0, 1], None),
        ("1gpu", [1], None),  # strtoul reads the leading digits
        ("0,", [0], None),
        ("3", [], "'3' names GPU 3, which does not exist"),
        ("0,3,1", [0], "every entry after it"),
        ("1,1", [], "twice"),
        ("0,1,0", [], "twice"),
        ("abc", [], "is not a GPU index"),
        ("0,abc,1", [0], "'abc' is not a GPU index"),
        ("0,,1", [0], "''"),
        ("0,-1,1", [0], "'-1'"),
        ("GPU-bbbb", [2], None),
        ("GPU-aaab,GPU-bbbb", [1, 2], None),
        ("GPU-aaa", [], "ambiguous"),
        ("GPU-zzzz", [], "matches no GPU"),
        ("GPU-bbbb,0", [2], "does not mix"),
        ("0,GPU-bbbb", [0], "is not a GPU index"),
        ("GPU-bbbb,GPU-bbbb3333", [], "twice"),
        ("MIG-GPU-bbbb3333-0000-0000-0000-000000000000/1/0", [2], None),
        ("MIG-GPU-ffff/1/0", [], "matches no GPU"),
        ("MIG-77", [1], None),
        ("MIG-77,MIG-78", [1], None),  # two slices of one GPU
        ("MIG-99", [], "matches no MIG device"),
        ("MIG-77,0", [1], "is not a MIG device"),
    ],
)
def test_parse_visible_devices(value: str | None, expected: list[int] | None, error_has: str | None) -> None:
    visible, error = gpu.parse_visible_devices(value, UUIDS, {"MIG-77aa": 1, "MIG-78bb": 1})
    assert visible == expected
    if error_has is None:
        assert error is None
    else:
        assert error is not None and error_has in error
        assert error.startswith(f"CUDA_VISIBLE_DEVICES={value!r}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0,5", [0, 5]), ("", []), ("-1", []), ("GPU-aaaa", None), ("MIG-1", None), (None, None), ("2,2", [])],
)
def test_parse_visible_devices_without_gpu_list(value: str | None, expected: list[int] | None) -> None:
    assert gpu.parse_visible_devices(value, None)[0] == expected


def test_parse_visible_devices_no_gpus_at_all() -> None:
    visible, error = gpu.parse_visible_devices("0", [])
    assert visible == [] and error is not None and "has 0" in error


@given(st.text(alphabet="0123456789,- GPUMIabcdefNoDvFils/+", max_size=40), st.integers(0, 4))
def test_parse_visible_devices_fuzz(value: str, count: int) -> None:
    uuids = UUIDS[:count] if count <= 3 else [*UUIDS, "GPU-cccc"]
    visible, error = gpu.parse_visible_devices(value, uuids)
    assert visible is not None
    assert all(0 <= i < len(uuids) for i in visible)
    assert len(set(visible)) == len(visible)
    assert error is None or isinstance(error, str)


def test_throttle_reasons_and_cuda_versions() -> None:
    assert gpu.decode_throttle_reasons(0) == []
    assert gpu.decode_throttle_reasons(0x1 | 0x4) == ["idle", "sw_power_cap"]
    assert gpu.decode_throttle_reasons(0x8 | 0x40 | 0x80) == ["hw_slowdown", "hw_thermal", "hw_power_brake"]
    assert gpu.decode_throttle_reasons(0x20 | 0x1000) == ["sw_thermal", "0x1000"]
    assert gpu.cuda_version_from_int(12040) == 12.4
    assert gpu.cuda_version_from_int(11080) == 11.8
    assert gpu.cuda_version_from_int(13000) == 13.0
    assert gpu.cuda_version_from_int(0) == 0.0


# -- NVML (faked) -----------------------------------------------------------------------------------------

GIB = 1 << 30
OTHER_PID = 4_000_000  # above any real pid_max, so psutil cannot name it and NVML's own name is used


def install_fake_nvml(monkeypatch: pytest.MonkeyPatch, *, laptop_power_refused: bool = False) -> dict[str, int]:
    """Two GPUs: a busy RTX 4090 shared with a browser, and an idle RTX 3060 on a narrow link."""
    calls = {"init": 0, "shutdown": 0}
    cards = [
        {
            "name": "NVIDIA GeForce RTX 4090",
            "uuid": UUIDS[0],
            "cc": (8, 9),
            "mem": (24 * GIB, 20 * GIB, 4 * GIB),
            "compute": [(os.getpid(), 12 * GIB), (OTHER_PID, 6 * GIB)],
            "graphics": [(OTHER_PID, 6 * GIB), (OTHER_PID + 1, None)],
            "pcie": (4, 4, 16, 16),
            "reasons": 0x4 | 0x20,
            "util": 98,
            "power": 180_000,
            "limit": 450_000,
        },
        {
            "name": "NVIDIA GeForce RTX 3060",
            "uuid": UUIDS[2],
            "cc": (8, 6),
            "mem": (12 * GIB, GIB // 2, 12 * GIB - GIB // 2),
            "compute": [],
            "graphics": [],
            "pcie": (1, 4, 4, 16),
            "reasons": 0x1,
            "util": 0,
            "power": 15_000,
            "limit": 170_000,
        },
    ]

    def card(h: int) -> dict[str, Any]:
        return cards[h]

    def procs(key: str) -> Any:
        return lambda h: [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in card(h)[key]]

    def nvlink_state(h: int, link: int) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # GeForce cards: no NVLink

    def power(h: int) -> int:
        if laptop_power_refused and h == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return card(h)["power"]

    def init() -> None:
        calls["init"] += 1

    def shutdown() -> None:
        calls["shutdown"] += 1

    fakes: dict[str, Any] = {
        "nvmlInit": init,
        "nvmlShutdown": shutdown,
        "nvmlSystemGetDriverVersion": lambda: "551.86",
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12040,
        "nvmlSystemGetProcessName": lambda pid: "/opt/google/chrome/chrome",
        "nvmlDeviceGetCount": lambda: len(cards),
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetName": lambda h: card(h)["name"],
        "nvmlDeviceGetUUID": lambda h: card(h)["uuid"],
        "nvmlDeviceGetCudaComputeCapability": lambda h: card(h)["cc"],
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(
            total=card(h)["mem"][0], used=card(h)["mem"][1], free=card(h)["mem"][2]
        ),
        "nvmlDeviceGetComputeRunningProcesses": procs("compute"),
        "nvmlDeviceGetGraphicsRunningProcesses": procs("graphics"),
        "nvmlDeviceGetCurrPcieLinkGeneration": lambda h: card(h)["pcie"][0],
        "nvmlDeviceGetMaxPcieLinkGeneration": lambda h: card(h)["pcie"][1],
        "nvmlDeviceGetCurrPcieLinkWidth": lambda h: card(h)["pcie"][2],
        "nvmlDeviceGetMaxPcieLinkWidth": lambda h: card(h)["pcie"][3],
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: card(h)["reasons"],
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=card(h)["util"], memory=0),
        "nvmlDeviceGetPowerUsage": power,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: card(h)["limit"],
        "nvmlDeviceGetNvLinkState": nvlink_state,
        "nvmlDeviceGetTopologyCommonAncestor": lambda a, b: pynvml.NVML_TOPOLOGY_HOSTBRIDGE,
    }
    for name, fn in fakes.items():
        monkeypatch.setattr(pynvml, name, fn)
    return calls


def test_probe_nvml_reads_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = install_fake_nvml(monkeypatch, laptop_power_refused=True)
    facts = gpu.probe_nvml({"CUDA_VISIBLE_DEVICES": "1"})
    assert calls == {"init": 1, "shutdown": 1}
    assert facts.available and facts.error is None
    assert (facts.driver_version, facts.cuda_driver_version, facts.gpu_count) == ("551.86", 12.4, 2)
    assert (facts.visible_indices, facts.visible_error) == ([1], None)

    busy, idle = facts.gpus
    assert (busy.index, busy.name, busy.uuid, busy.compute_capability) == (0, "NVIDIA GeForce RTX 4090", UUIDS[0], 8.9)
    assert (busy.memory_total_bytes, busy.memory_used_bytes, busy.memory_free_bytes) == (24 * GIB, 20 * GIB, 4 * GIB)
    by_pid = {p.pid: p for p in busy.processes}
    assert set(by_pid) == {os.getpid(), OTHER_PID, OTHER_PID + 1}
    assert by_pid[os.getpid()].is_self and by_pid[os.getpid()].used_bytes == 12 * GIB
    assert by_pid[os.getpid()].name == psutil.Process().name()
    assert not by_pid[OTHER_PID].is_self and by_pid[OTHER_PID].name == "chrome"
    assert by_pid[OTHER_PID].used_bytes == 6 * GIB  # listed as compute and graphics: counted once
    assert by_pid[OTHER_PID + 1].used_bytes == 0  # WDDM hides per-process memory
    # ... so what others hold is the device's 20 GiB used minus this process's 12 GiB, not the 6 GiB listed
    assert (busy.other_processes_bytes, busy.other_processes_from) == (8 * GIB, "device")
    assert busy.nvlink_active == 0 and idle.nvlink_active == 0  # consumer cards: NVML says not supported
    assert [(t.a, t.b, t.level) for t in facts.topology] == [(0, 1, "host_bridge")]
    assert busy.throttle_reasons == ["sw_power_cap", "sw_thermal"]
    assert (busy.utilization_gpu, busy.power_w, busy.power_limit_w) == (98, 180.0, 450.0)
    assert (busy.pcie_gen_current, busy.pcie_gen_max, busy.pcie_width_current, busy.pcie_width_max) == (4, 4, 16, 16)
    assert busy.errors == []

    assert idle.compute_capability == 8.6 and idle.processes == [] and idle.other_processes_bytes == 0
    assert idle.other_processes_from == "processes"
    assert (idle.pcie_gen_current, idle.pcie_width_current, idle.pcie_width_max) == (1, 4, 16)
    assert idle.throttle_reasons == ["idle"]
    assert idle.power_w == 0.0 and idle.power_limit_w == 170.0
    assert len(idle.errors) == 1 and idle.errors[0].startswith("power:")


def test_probe_nvml_visible_devices_past_the_last_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch)
    facts = gpu.probe_nvml({"CUDA_VISIBLE_DEVICES": "2"})
    assert facts.visible_indices == []
    assert facts.visible_error is not None and "does not exist" in facts.visible_error
    assert gpu.probe_nvml({}).visible_indices is None
    assert gpu.probe_nvml({"CUDA_VISIBLE_DEVICES": UUIDS[2][:12]}).visible_indices == [1]


def test_probe_nvml_old_driver_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drivers without the newer entry points: the older throttle-reason and CUDA-version calls answer."""
    install_fake_nvml(monkeypatch)

    def missing(*_: Any) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", missing)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: 0x8)
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", missing)
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion", lambda: 11080)
    facts = gpu.probe_nvml({})
    assert facts.cuda_driver_version == 11.8
    assert facts.gpus[0].throttle_reasons == ["hw_slowdown"]


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (pynvml.NVMLError_LibraryNotFound, "NVML library not found"),
        (pynvml.NVMLError_DriverNotLoaded, "driver not loaded"),
        (pynvml.NVMLError_LibRmVersionMismatch, "versions differ"),
        (pynvml.NVMLError_Unknown, "NVML failed to start"),
    ],
)
def test_probe_nvml_absent_is_a_fact(monkeypatch: pytest.MonkeyPatch, error: type[Exception], says: str) -> None:
    def refuse() -> None:
        raise error()

    monkeypatch.setattr(pynvml, "nvmlInit", refuse)
    facts = gpu.probe_nvml({"CUDA_VISIBLE_DEVICES": ""})
    assert not facts.available and facts.gpus == []
    assert facts.error is not None and says in facts.error
    assert facts.visible_indices == []  # "" hides every GPU whatever the GPUs are


def test_probe_nvml_unexpected_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash() -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(pynvml, "nvmlInit", crash)
    assert "cannot open shared object" in (gpu.probe_nvml({}).error or "")

    calls = install_fake_nvml(monkeypatch)

    def count_refused() -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", count_refused)
    facts = gpu.probe_nvml({"CUDA_VISIBLE_DEVICES": "0"})
    assert not facts.available and facts.error is not None and facts.error.startswith("device count")
    assert facts.visible_indices == [0] and calls["shutdown"] == 1


def test_probe_nvml_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    facts = gpu.probe_nvml({})
    assert not facts.available and "pynvml" in (facts.error or "")


# -- torch build (files only) -----------------------------------------------------------------------------


def test_probe_torch_on_this_machine() -> None:
    facts = torch_build.probe_torch()
    assert facts.error is None and facts.installed
    assert facts.version.startswith("2.13.0") and "+cpu" in facts.version
    assert facts.version_tuple == [2, 13, 0]
    assert facts.is_cpu_build and facts.cuda_build == 0.0 and facts.hip_build == ""
    assert Path(facts.location, "version.py").is_file()


def test_no_probe_imports_torch() -> None:
    code = textwrap.dedent(
        """
        import os, sys
        from wandoc.probes import checkpoints, gpu, packages, system, torch_build, torch_deep
        from wandoc.probes import platform as plat
        import wandoc.estimate
        plat.probe_platform(os.environ); plat.probe_env(os.environ); system.probe_system()
        gpu.probe_nvml(os.environ); torch_build.probe_torch(); packages.probe_packages()
        checkpoints.probe_checkpoints(None)
        print("torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "version", "cuda", "hip", "cpu"),
    [
        ("__version__ = '2.6.0+cu124'\ncuda: Optional[str] = '12.4'\nhip: Optional[str] = None\n", "2.6.0+cu124",
         12.4, "", False),
        ("__version__ = '2.5.1+rocm6.2'\ncuda = None\nhip = '6.2.41133-dd7f95766'\n", "2.5.1+rocm6.2",
         0.0, "6.2.41133-dd7f95766", False),
        ("__version__ = '2.7.0+cpu'\ncuda = None\nhip = None\n", "2.7.0+cpu", 0.0, "", True),
        ("__version__ = '2.8.0.dev20250601+cu128'\ncuda = '12.8'\n", "2.8.0.dev20250601+cu128", 12.8, "", False),
        ("__version__ = compute()\ncuda = os.environ['X']\n", "", 0.0, "", True),  # never executed
    ],
)  # fmt: skip
def test_facts_from_version_py(text: str, version: str, cuda: float, hip: str, cpu: bool) -> None:
    facts = torch_build.facts_from_version_py(text)
    assert (facts.version, facts.cuda_build, facts.hip_build, facts.is_cpu_build) == (version, cuda, hip, cpu)


def test_version_tuple() -> None:
    assert torch_build.version_tuple("2.6.0+cu124") == [2, 6, 0]
    assert torch_build.version_tuple("2.8.0.dev20250601") == [2, 8, 0]
    assert torch_build.version_tuple("2.13.0a0+gitcf30153") == [2, 13, 0]
    assert torch_build.version_tuple("garbage") == []


def _fake_dist(root: Path, version: str = "2.6.0+cu124") -> Any:
    return SimpleNamespace(files=[PackagePath("torch/version.py")], version=version, locate_file=lambda p: root / p)


def test_probe_torch_broken_installs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch_build.md, "distribution", lambda name: _fake_dist(tmp_path))
    missing = torch_build.probe_torch()
    assert missing.installed and missing.version == "2.6.0+cu124" and missing.version_tuple == [2, 6, 0]
    assert missing.error is not None and "missing" in missing.error

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text("__version__ = '2.6.0\n", encoding="utf-8")
    broken = torch_build.probe_torch()
    assert broken.error is not None and "SyntaxError" in broken.error

    (tmp_path / "torch" / "version.py").write_text("__version__ = '2.6.0+cu124'\ncuda = '12.4'\n", encoding="utf-8")
    good = torch_build.probe_torch()
    assert good.error is None and good.cuda_build == 12.4 and good.location == str(tmp_path / "torch")


def test_probe_torch_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> Any:
        raise torch_build.md.PackageNotFoundError(name)

    monkeypatch.setattr(torch_build.md, "distribution", absent)
    monkeypatch.setattr(torch_build.importlib.util, "find_spec", lambda name: None)
    facts = torch_build.probe_torch()
    assert not facts.installed and facts.error is None


# -- torch deep (a child process) -------------------------------------------------------------------------


def _fake_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str) -> None:
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))


def test_deep_import_crash_is_a_fact(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = (
        "[WinError 126] The specified module could not be found. Error loading "
        '"C:\\\\venv\\\\Lib\\\\site-packages\\\\torch\\\\lib\\\\c10.dll" or one of its dependencies.'
    )
    _fake_torch(monkeypatch, tmp_path, f"raise OSError('{message}')\n")
    deep = torch_deep.probe_torch_deep(timeout=30)
    assert deep.ran and not deep.import_ok and not deep.cuda_available
    assert deep.error is not None and deep.error.startswith("OSError: [WinError 126]") and "c10.dll" in deep.error
    assert deep.seconds > 0


def test_deep_reports_what_a_loaded_torch_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_torch(
        monkeypatch,
        tmp_path,
        """
        from types import SimpleNamespace
        def _refuse():
            raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040)")
        backends = SimpleNamespace(cudnn=SimpleNamespace(version=lambda: 90100))
        cuda = SimpleNamespace(is_available=_refuse)
        """,
    )
    deep = torch_deep.probe_torch_deep(timeout=30)
    assert deep.import_ok and deep.cudnn_version == 90100 and not deep.cuda_available and not deep.matmul_ok
    assert deep.error == "RuntimeError: The NVIDIA driver on your system is too old (found version 11040)"


def test_deep_with_the_real_cpu_torch() -> None:
    deep = torch_deep.probe_torch_deep(timeout=90)
    assert deep.error is None and deep.import_ok
    assert not deep.cuda_available and deep.device_count == 0 and not deep.matmul_ok


def test_deep_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_torch(monkeypatch, tmp_path, "import time\ntime.sleep(60)\n")
    deep = torch_deep.probe_torch_deep(timeout=1)
    assert deep.error == "timed out after 1 s (importing torch or initialising CUDA hung)"
    assert not deep.import_ok and deep.seconds < 30


def test_deep_hard_crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_torch(monkeypatch, tmp_path, "import os, sys\nsys.stderr.write('Fatal Python error: Segmentation fault\\n')\n"
                "sys.stderr.flush()\nos._exit(139)\n")  # fmt: skip
    deep = torch_deep.probe_torch_deep(timeout=30)
    assert not deep.import_ok and deep.error == "Fatal Python error: Segmentation fault"
    silent = tmp_path / "silent"
    silent.mkdir()
    _fake_torch(monkeypatch, silent, "import os\nos._exit(3)\n")
    assert torch_deep.probe_torch_deep(timeout=30).error == "the torch check exited with code 3 and printed nothing"


def test_deep_missing_interpreter(tmp_path: Path) -> None:
    deep = torch_deep.probe_torch_deep(timeout=5, python=str(tmp_path / "no-python"))
    assert not deep.import_ok and deep.error is not None and deep.error.startswith("could not start")


def test_last_meaningful_line() -> None:
    stderr = textwrap.dedent(
        """\
        Traceback (most recent call last):
          File "<string>", line 1, in <module>
          File "C:\\venv\\Lib\\site-packages\\torch\\__init__.py", line 148, in <module>
            raise err
            ^^^^^^^^^
        OSError: [WinError 126] Error loading "c10.dll" or one of its dependencies.

        """
    )
    assert (
        torch_deep.last_meaningful_line(stderr)
        == 'OSError: [WinError 126] Error loading "c10.dll" or one of its dependencies.'
    )
    assert torch_deep.last_meaningful_line("\n  \n") == ""
    assert torch_deep.parse_output("noise\nWANDOC_TORCH_DEEP {not json\n") is None
    assert torch_deep.parse_output('WANDOC_TORCH_DEEP {"import_ok": true}\n') == {"import_ok": True}


# -- packages ---------------------------------------------------------------------------------------------


def _dist_info(root: Path, name: str, version: str) -> None:
    folder = root / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")


def test_probe_packages_from_metadata(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _dist_info(tmp_path, "flash_attn", "2.7.4.post1")
    _dist_info(tmp_path, "triton-windows", "3.2.0.post11")
    _dist_info(tmp_path, "sageattention", "2.1.1")
    (tmp_path / "flash_attn_interface.py").write_text("raise RuntimeError('imported!')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    facts = packages.probe_packages()
    assert (facts.flash_attn.installed, facts.flash_attn.version) == (True, "2.7.4.post1")
    assert facts.flash_attn.location == str(tmp_path)
    assert (facts.triton.installed, facts.triton.version) == (True, "3.2.0.post11")
    assert (facts.sageattention.installed, facts.sageattention.version) == (True, "2.1.1")
    assert facts.flash_attn_3.installed and facts.flash_attn_3.location.endswith("flash_attn_interface.py")
    assert "flash_attn_interface" not in sys.modules
    for name in ("xformers", "diffusers", "accelerate"):  # read from metadata, whatever this environment has
        assert getattr(facts, name).installed == (importlib.util.find_spec(name) is not None)


def test_probe_packages_error_is_a_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flash_attn_interface", SimpleNamespace(__spec__=None))
    facts = packages.probe_packages()
    assert not facts.flash_attn_3.installed and facts.flash_attn_3.error is not None


def test_deep_imports_nothing_from_the_current_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run inside a checkout (as the README says), the child must not import the checkout's json.py or torch.py."""
    marks = tmp_path / "marks.txt"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("json", "torch", "time", "sys"):
        (checkout / f"{name}.py").write_text(f"open({str(marks)!r}, 'a').write('{name}\\n')\n", encoding="utf-8")
    monkeypatch.chdir(checkout)
    deep = torch_deep.probe_torch_deep(timeout=90)
    assert not marks.exists(), marks.read_text(encoding="utf-8")
    assert deep.error is None and deep.import_ok  # the real torch was found all the same
