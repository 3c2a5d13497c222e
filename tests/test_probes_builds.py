"""What installed files say about builds: cuDNN, HIP and ZLUDA beside torch, what attention wheels were built
for, what FA3 returns, and what importing them next to torch says (--deep). Nothing here imports torch."""

from __future__ import annotations

import importlib
import json
import os
import struct
import sys
from pathlib import Path

import pytest

from wandoc.facts import PackageFacts
from wandoc.probes import packages, torch_build, torch_deep


def dist_info(site: Path, name: str, version: str, *, url: str = "", requires: tuple[str, ...] = ()) -> None:
    """An installed distribution as pip leaves it: METADATA, and direct_url.json when installed from a URL."""
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    (folder / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if url:
        (folder / "direct_url.json").write_text(json.dumps({"url": url, "archive_info": {}}), encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    return folder


# -- cuDNN, HIP and ZLUDA -----------------------------------------------------------------------------------


def fake_torch(site: Path, version_py: str, lib_files: dict[str, bytes]) -> Path:
    torch_dir = site / "torch"
    (torch_dir / "lib").mkdir(parents=True)
    (torch_dir / "version.py").write_text(version_py, encoding="utf-8")
    for name, data in lib_files.items():
        (torch_dir / "lib" / name).write_bytes(data)
    return torch_dir


def version_resource(major: int, minor: int, build: int, private: int) -> bytes:
    """The bytes of a VS_FIXEDFILEINFO, amid the other bytes of a DLL."""
    fixed = struct.pack("<IIII", 0xFEEF04BD, 0x00010000, major << 16 | minor, build << 16 | private)
    return b"MZ" + os.urandom(3000).replace(b"\xbd\x04\xef\xfe", b"....") + fixed + b"\0" * 40


def probe_torch_at(torch_dir: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> torch_build.TorchFacts:
    class Dist:
        def __init__(self) -> None:
            self.version = version

        def locate_file(self, path: str) -> Path:
            return torch_dir.parent / path

    real = torch_build.md.distribution

    def distribution(name: str) -> object:
        return Dist() if name == "torch" else real(name)

    monkeypatch.setattr(torch_build.md, "distribution", distribution)
    return torch_build.probe_torch()


CU128 = "__version__ = '2.9.0+cu128'\ncuda = '12.8'\nhip = None\n"


def test_cudnn_from_the_nvidia_wheel(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist_info(site, "nvidia-cudnn-cu12", "9.10.2.21")
    facts = probe_torch_at(fake_torch(site, CU128, {"libtorch_cuda.so": b""}), monkeypatch, "2.9.0+cu128")
    assert (facts.cudnn_version, facts.cudnn_from) == (91002, "nvidia-cudnn-cu12 9.10.2.21")
    assert facts.zluda == "" and facts.hip_runtime is None and facts.error is None


def test_cudnn_from_the_bundled_windows_dll(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist_info(site, "nvidia-cudnn-cu12", "9.10.2.21")  # installed for something else: torch loads its own copy
    lib = {"cudnn64_9.dll": version_resource(9, 8, 0, 87), "cudnn64_8.dll": version_resource(8, 9, 7, 29)}
    facts = probe_torch_at(fake_torch(site, CU128, lib), monkeypatch, "2.9.0+cu128")
    assert facts.cudnn_version == 90800 and "cudnn64_9.dll" in facts.cudnn_from and "9.8.0.87" in facts.cudnn_from


def test_cudnn_from_a_versioned_so_and_unknown_otherwise(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    facts = probe_torch_at(fake_torch(site, CU128, {"libcudnn.so.8.9.2": b""}), monkeypatch, "2.9.0+cu128")
    assert facts.cudnn_version == 8902
    assert torch_build.cudnn_from_lib(site, [("cudnn64_9.dll", 10)]) == (0, "")  # no such file: unknown
    assert torch_build.dll_file_version(b"MZ" + b"\0" * 100) is None


def test_a_cpu_build_reads_no_cudnn(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist_info(site, "nvidia-cudnn-cu12", "9.10.2.21")
    cpu = "__version__ = '2.9.0+cpu'\ncuda = None\nhip = None\n"
    facts = probe_torch_at(fake_torch(site, cpu, {}), monkeypatch, "2.9.0+cpu")
    assert facts.cudnn_version == 0 and facts.hip_runtime is None


def test_rocm_build_with_and_without_its_hip_runtime(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rocm = "__version__ = '2.5.1+rocm6.2'\ncuda = None\nhip = '6.2.41133'\n"
    monkeypatch.delenv("ROCM_PATH", raising=False)
    torch_dir = fake_torch(site, rocm, {"libamdhip64.so": b"", "libtorch_hip.so": b""})
    assert probe_torch_at(torch_dir, monkeypatch, "2.5.1+rocm6.2").hip_runtime is True
    (torch_dir / "lib" / "libamdhip64.so").unlink()
    monkeypatch.setenv("ROCM_PATH", str(site / "no-rocm-here"))
    assert torch_build.hip_runtime_found([("libtorch_hip.so", 1)], str(site / "no-rocm-here")) is False
    rocm_dir = site / "rocm"
    (rocm_dir / "lib").mkdir(parents=True)
    (rocm_dir / "lib" / "libamdhip64.so.6").write_bytes(b"")
    assert torch_build.hip_runtime_found([], str(rocm_dir)) is True


def test_zluda_patched_torch_lib(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cu118 = "__version__ = '2.3.1+cu118'\ncuda = '11.8'\nhip = None\n"
    patched = {"cublas64_11.dll": b"\0" * 300_000, "cusparse64_11.dll": b"\0" * 200_000, "cudnn64_8.dll": b""}
    facts = probe_torch_at(fake_torch(site, cu118, patched), monkeypatch, "2.3.1+cu118")
    assert "cublas64_11.dll" in facts.zluda and "ZLUDA" in facts.zluda
    assert "nvrtc_cuda.dll" in torch_build.zluda_evidence([("nvrtc_cuda.dll", 80_000_000)])
    nvidia = [("cublas64_11.dll", 94_000_000), ("cublasLt64_11.dll", 560_000_000), ("nvrtc64_112_0.dll", 40_000_000)]
    assert torch_build.zluda_evidence(nvidia) == ""


# -- attention wheels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "url", "torch", "cuda"),
    [
        ("2.7.4.post1+cu12torch2.6cxx11abiFALSE", "", "2.6", 12.0),
        ("2.5.8+cu122torch2.3cxx11abiTRUE", "", "2.3", 12.2),
        ("2.1.1+cu126torch2.6.0", "", "2.6", 12.6),
        ("2.2.0+cu128torch2.7.1.post1", "", "2.7", 12.8),
        ("2.8.3+cu130torch2.10", "", "2.10", 13.0),
        (
            "2.7.4.post1",
            "https://github.com/Dao-AILab/flash-attention/releases/download/v2.7.4.post1/"
            "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp311-cp311-linux_x86_64.whl",
            "2.5",
            12.0,
        ),
        ("2.8.3", "", "", 0.0),
        ("1.0.6", "https://files.pythonhosted.org/packages/sageattention-1.0.6-py3-none-any.whl", "", 0.0),
    ],
)
def test_build_labels(version: str, url: str, torch: str, cuda: float) -> None:
    assert packages.parse_label(packages.build_label(version, url)) == (torch, cuda)


def test_installed_wheels_say_what_they_were_built_for(site: Path) -> None:
    url = "file:///wheels/flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp311-cp311-win_amd64.whl"
    dist_info(site, "flash-attn", "2.7.4.post1", url=url)
    dist_info(site, "sageattention", "2.1.1+cu126torch2.6.0")
    dist_info(site, "xformers", "0.0.28.post3", requires=("numpy", "torch==2.5.1"))
    facts = packages.probe_packages()
    fa = facts.flash_attn
    assert (fa.name, fa.version, fa.build_label, fa.built_torch, fa.built_cuda) == (
        "flash-attn", "2.7.4.post1", "cu12torch2.6cxx11abiFALSE", "2.6", 12.0,
    )  # fmt: skip
    assert (facts.sageattention.built_torch, facts.sageattention.built_cuda) == ("2.6", 12.6)
    assert (facts.xformers.built_torch, facts.xformers.build_label) == ("2.5", "")


FA3_BEFORE = """
class FlashAttnVarlenFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, *args):
        out, softmax_lse, *rest = _flash_attn_forward(q, k, v)
        return out, softmax_lse
"""
FA3_AFTER = """
class FlashAttnVarlenFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, return_softmax=False):
        out, softmax_lse, *rest = _flash_attn_forward(q, k, v)
        return (out, softmax_lse) if return_softmax else out
"""


@pytest.mark.parametrize(("source", "returns"), [(FA3_BEFORE, "tuple"), (FA3_AFTER, "tensor"), ("x = 1\n", "")])
def test_what_the_installed_fa3_returns(site: Path, source: str, returns: str) -> None:
    dist_info(site, "flash_attn_3", "3.0.0b1")
    (site / "flash_attn_interface.py").write_text(source, encoding="utf-8")
    importlib.invalidate_caches()
    facts = packages.probe_packages()
    assert facts.flash_attn_3.installed and facts.fa3_varlen_returns == returns
    assert facts.fa3_varlen_returns_from == ("the installed flash_attn_interface.py" if returns else "")


@pytest.mark.parametrize(
    ("version", "returns"),
    [("3.0.0", "tensor"), ("3.0.1+cu129", "tensor"), ("3.0.0b1", ""), ("3.0.0.b1", ""), ("2.9.0", ""), ("", "")],
)
def test_fa3_without_its_source_is_judged_by_version_only_when_final(version: str, returns: str) -> None:
    assert packages.fa3_returns(PackageFacts(installed=True, version=version))[0] == returns


# -- importing them next to torch (--deep) ----------------------------------------------------------------


def test_deep_check_imports_attention_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "flash_attn.py").write_text(
        "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n", encoding="utf-8"
    )
    (mods / "sageattention.py").write_text("VERSION = '2.1.1'\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(mods))
    deep = torch_deep.probe_torch_deep(timeout=120, python=sys.executable)
    assert deep.import_ok
    assert deep.attention_imports["sageattention"] == "ok"
    assert (
        deep.attention_imports["flash_attn"].startswith("ImportError: ")
        and "undefined symbol" in (deep.attention_imports["flash_attn"])
    )
    assert "flash_attn_interface" not in deep.attention_imports  # not installed: not tried


def test_zluda_cache(tmp_path: Path) -> None:
    assert torch_build.zluda_cache_found(None) is None  # not Windows: nothing to say
    assert torch_build.zluda_cache_found(str(tmp_path)) is False
    cache = tmp_path / "ZLUDA" / "ComputeCache"
    cache.mkdir(parents=True)
    assert torch_build.zluda_cache_found(str(tmp_path)) is False
    (cache / "zluda.db").write_bytes(b"SQLite format 3\0")
    assert torch_build.zluda_cache_found(str(tmp_path)) is True


# -- AMD GPUs through KFD -----------------------------------------------------------------------------------


def kfd_node(topology: Path, node: int, target: int, vram: int = 0) -> None:
    folder = topology / str(node)
    (folder / "mem_banks" / "0").mkdir(parents=True)
    (folder / "properties").write_text(f"cpu_cores_count 0\nsimd_count 192\ngfx_target_version {target}\n")
    (folder / "mem_banks" / "0" / "properties").write_text(f"heap_type 1\nsize_in_bytes {vram}\n")


def test_amd_gpus_from_the_kfd_topology(tmp_path: Path) -> None:
    from wandoc.probes import amd

    topology = tmp_path / "nodes"
    kfd_node(topology, 0, 0)  # the CPU
    kfd_node(topology, 1, 110000, 25_753_026_560)
    kfd_node(topology, 2, 100301, 12_868_124_672)
    (topology / "3").mkdir()  # a node without properties: skipped
    device = tmp_path / "kfd"
    device.write_bytes(b"")
    facts = amd.probe_amd(topology, device)
    assert facts.checked and facts.kfd and facts.error is None
    assert [(g.node, g.gfx, g.vram_bytes) for g in facts.gpus] == [
        (1, "gfx1100", 25_753_026_560), (2, "gfx1031", 12_868_124_672),
    ]  # fmt: skip
    bare = amd.probe_amd(tmp_path / "no-topology", tmp_path / "no-kfd")
    assert bare.checked and not bare.kfd and bare.gpus == []


@pytest.mark.parametrize(("number", "name"), [(110000, "gfx1100"), (100301, "gfx1031"), (90010, "gfx90a"),
                                             (90402, "gfx942"), (120001, "gfx1201")])  # fmt: skip
def test_gfx_names(number: int, name: str) -> None:
    from wandoc.probes import amd

    assert amd.gfx_name(number) == name


def test_rosetta_is_only_asked_on_an_intel_python_on_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    from wandoc.probes import platform as plat

    if sys.platform != "darwin":
        assert plat.under_rosetta() is False  # no libc.dylib: nothing is translated, and nothing raises
    asked: list[bool] = []
    monkeypatch.setattr(plat, "under_rosetta", lambda: asked.append(True) or True)
    for system, machine, expected in (
        ("Darwin", "x86_64", True),
        ("Darwin", "arm64", False),
        ("Linux", "x86_64", False),
    ):
        monkeypatch.setattr(plat.platform, "system", lambda system=system: system)
        monkeypatch.setattr(plat.platform, "machine", lambda machine=machine: machine)
        assert plat.probe_platform({}).rosetta is expected
    assert asked == [True]
