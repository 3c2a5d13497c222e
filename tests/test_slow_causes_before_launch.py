"""The scoreboard: every cause in SLOW_CAUSES.md that shows before launch, caught by `wandoc check`.

One case per cause: its number, the rules that catch it, and pairs of facts trees (the machine that has the
problem, and its sane twin) replayed exactly as a user's would be, through `wandoc check --facts FILE`. The
positive tree must draw a warning or an error from one of the cause's rules; the twin must draw nothing from
them at all. docs/slow-causes.md shows the same table and is held to it here, count included.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from clirun import run_wandoc
from test_checkpoints_gguf import gguf_file, wan_dit

from wandoc.probes import checkpoints as ck

ROOT = Path(__file__).resolve().parents[1]
GB = 10**9


@dataclass(frozen=True)
class Scenario:
    name: str
    positive: dict[str, Any]
    sane: dict[str, Any]


@dataclass(frozen=True)
class Cause:
    number: int
    title: str
    rules: tuple[str, ...]
    scenarios: tuple[Scenario, ...] = ()
    pending: str = ""  # the rule is ready; what must happen elsewhere before real checks fire it
    not_caught: str = ""  # why nothing at warning or error catches it before launch
    no_signal: bool = False  # the catalog names no pre-launch signal for it
    checks: tuple[str, ...] = field(default=())  # extra assertions on the positive findings, by name


def gpu(index: int = 0, name: str = "NVIDIA GeForce RTX 4090", total: float = 25.7, free: float = 24.0, **more: Any):
    return {"index": index, "name": name, "memory_total_bytes": int(total * GB), "memory_free_bytes": int(free * GB),
            "compute_capability": more.pop("cc", 8.9), **more}  # fmt: skip


def nvml(*gpus: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"available": True, "gpu_count": len(gpus), "gpus": list(gpus), **more}


A14B_ESTIMATE = {"task": "t2v-A14B", "known": True, "dit_experts": 2, "dit_runtime_dtype": "BF16",
                 "dit_bytes": int(28.6 * GB), "t5_bytes": int(11.4 * GB), "activations_bytes": int(5.7 * GB),
                 "peak_vram_no_offload": int(74.2 * GB), "peak_vram_offload": int(34.8 * GB),
                 "offloaded_bytes": int(68.6 * GB)}  # fmt: skip
T2V_14B_ESTIMATE = {**A14B_ESTIMATE, "task": "t2v-14B", "dit_experts": 1, "peak_vram_no_offload": int(45.6 * GB),
                    "offloaded_bytes": int(40.0 * GB)}  # fmt: skip


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with top-level branches replaced or merged (a dict merges one level down)."""
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        out[key] = (
            {**out.get(key, {}), **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def real_gguf_checkpoints(folder: Path, quant: str) -> dict[str, Any]:
    """Checkpoint facts read by the probe from a GGUF file written here (a miniature Wan DiT)."""
    (folder / "diffusion_models").mkdir(parents=True, exist_ok=True)
    (folder / "diffusion_models" / f"wan2.1-t2v-14b-{quant}.gguf").write_bytes(gguf_file(wan_dit(quant=quant)))
    return ck.probe_checkpoints(folder).model_dump(mode="json")


# The positive trees are partial: what is left out keeps its default, exactly as an unread fact would.
WIN_4090 = {"platform": {"os": "Windows", "shell": "powershell"}, "nvml": nvml(gpu())}
LINUX_H100 = {"platform": {"os": "Linux"}, "nvml": nvml(gpu(name="NVIDIA H100 80GB HBM3", total=85.0, free=84.5,
                                                             cc=9.0))}  # fmt: skip
TORCH_27 = {"installed": True, "version": "2.7.1+cu128", "version_tuple": [2, 7, 1], "cuda_build": 12.8}

CAUSES: tuple[Cause, ...] = (
    Cause(
        1,
        "VRAM overflow into Windows shared memory",
        ("GPU-WINDOWS-SYSMEM-SPILL", "GPU-MODEL-EXCEEDS-FREE-VRAM"),
        (
            Scenario(
                "t2v-A14B without offload on a 24 GB card, Windows",
                with_(WIN_4090, estimate=A14B_ESTIMATE, repo={"effective": {"offload_model": False}}),
                with_(
                    WIN_4090,
                    estimate={**A14B_ESTIMATE, "peak_vram_no_offload": int(18 * GB)},
                    repo={"effective": {"offload_model": False}},
                ),
            ),
        ),
    ),
    Cause(
        2,
        "A laptop's 16 GB is 8 GB dedicated",
        ("GPU-LAPTOP-SMALL-VRAM",),
        (
            Scenario(
                "RTX 4060 Laptop, 8 GB dedicated",
                {
                    "platform": {"os": "Windows"},
                    "nvml": nvml(gpu(name="NVIDIA GeForce RTX 4060 Laptop GPU", total=8.6, free=7.9)),
                },
                {
                    "platform": {"os": "Windows"},
                    "nvml": nvml(gpu(name="NVIDIA GeForce RTX 4090 Laptop GPU", total=17.2, free=16.5)),
                },
            ),
        ),
    ),
    Cause(
        3,
        "Other processes holding VRAM",
        ("GPU-VRAM-HELD-BY-OTHERS", "GPU-RUN-ON-BUSY-GPU"),
        (
            Scenario(
                "Windows hides per-process memory: 6 GB in use by others on the device",
                with_(
                    WIN_4090,
                    nvml=nvml(
                        gpu(
                            free=18.0,
                            memory_used_bytes=int(6.4 * GB),
                            other_processes_bytes=int(6.4 * GB),
                            other_processes_from="device",
                            processes=[{"pid": 1532, "name": "dwm.exe"}],
                        )
                    ),
                ),
                with_(
                    WIN_4090,
                    nvml=nvml(
                        gpu(
                            free=23.0,
                            memory_used_bytes=int(1.2 * GB),
                            other_processes_bytes=int(1.2 * GB),
                            other_processes_from="device",
                            processes=[{"pid": 1532, "name": "dwm.exe"}],
                        )
                    ),
                ),
            ),
            Scenario(
                "Linux: a stuck python holds 20 GB of GPU 0 while GPU 1 is idle",
                {
                    "nvml": nvml(
                        gpu(
                            0,
                            free=4.0,
                            other_processes_bytes=20 * GB,
                            processes=[{"pid": 4242, "name": "python", "used_bytes": 20 * GB}],
                        ),
                        gpu(1, free=24.0),
                    )
                },
                {"nvml": nvml(gpu(0, free=24.0), gpu(1, free=24.0))},
            ),
        ),
    ),
    Cause(
        4,
        "System RAM too small for what is offloaded",
        ("SYS-OFFLOAD-WILL-SWAP", "SYS-RAM-SWAP-TOO-SMALL-FOR-OFFLOAD"),
        (
            Scenario(
                "A14B offload (68.6 GB) with 48 GB available and 64 GB of swap",
                {
                    "system": {"ram_total_bytes": 64 * GB, "ram_available_bytes": 48 * GB, "swap_total_bytes": 64 * GB},
                    "estimate": A14B_ESTIMATE,
                    "repo": {"effective": {"offload_model": True}},
                },
                {
                    "system": {
                        "ram_total_bytes": 256 * GB,
                        "ram_available_bytes": 230 * GB,
                        "swap_total_bytes": 8 * GB,
                    },
                    "estimate": A14B_ESTIMATE,
                    "repo": {"effective": {"offload_model": True}},
                },
            ),
        ),
    ),
    Cause(
        5,
        "WSL2: checkpoints on the Windows drive",
        ("SYS-WSL-CKPT-ON-WINDOWS-DRIVE",),
        (
            Scenario(
                "WSL2 reading /mnt/d",
                {
                    "platform": {"os": "Linux", "wsl": True},
                    "checkpoints": {
                        "dir": "/mnt/d/Wan2.2-T2V-A14B",
                        "found": True,
                        "models": [{"folder": "high_noise_model", "bytes": 57 * GB}],
                    },
                },
                {
                    "platform": {"os": "Linux", "wsl": True},
                    "checkpoints": {
                        "dir": "/home/ana/Wan2.2-T2V-A14B",
                        "found": True,
                        "models": [{"folder": "high_noise_model", "bytes": 57 * GB}],
                    },
                },
            ),
        ),
    ),
    Cause(
        6,
        "At the edge of VRAM, fragmentation",
        ("ENV-ALLOC-CONF-NO-EXPANDABLE",),
        (
            Scenario(
                "t2v-14B at 45.6 GB on a 48 GB card, expandable segments off",
                with_(
                    LINUX_H100,
                    estimate=T2V_14B_ESTIMATE,
                    repo={"effective": {"offload_model": False}},
                    nvml=nvml(gpu(name="NVIDIA L40S", total=48.3, free=50.0)),
                ),
                with_(
                    LINUX_H100,
                    estimate=T2V_14B_ESTIMATE,
                    repo={"effective": {"offload_model": False}},
                    nvml=nvml(gpu(name="NVIDIA L40S", total=48.3, free=50.0)),
                    env={"vars": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}},
                ),
            ),
        ),
    ),
    Cause(
        7,
        "Offload where the model fits",
        ("ARGS-OFFLOAD-WHERE-MODEL-FITS", "CODE-SEQUENTIAL-OFFLOAD"),
        (
            Scenario(
                "the default offload_model=True for t2v-14B on an 80 GB H100",
                with_(
                    LINUX_H100,
                    estimate=T2V_14B_ESTIMATE,
                    repo={"effective": {"offload_model": True}, "offload_defaulted": True},
                ),
                with_(LINUX_H100, estimate=T2V_14B_ESTIMATE, repo={"effective": {"offload_model": False}}),
            ),
        ),
    ),
    Cause(8, "Low-VRAM profiles on big cards", (), no_signal=True),
    Cause(9, "Pinned-memory budget too small", (), no_signal=True),
    Cause(10, "Block swap without non-blocking transfers", (), no_signal=True),
    Cause(
        11,
        "A14B expert switch",
        ("GPU-MODEL-EXCEEDS-FREE-VRAM", "ARGS-OFFLOAD-WHERE-MODEL-FITS"),
        (
            Scenario(
                "both A14B experts kept resident (no offload) on an 80 GB card: out of memory at the switch",
                with_(
                    LINUX_H100,
                    estimate={**A14B_ESTIMATE, "peak_vram_no_offload": int(92 * GB)},
                    repo={"effective": {"offload_model": False}},
                ),
                with_(
                    LINUX_H100,
                    estimate={**A14B_ESTIMATE, "peak_vram_no_offload": int(92 * GB)},
                    repo={"effective": {"offload_model": False}},
                    nvml=nvml(gpu(name="NVIDIA H200", total=150.0, free=149.0, cc=9.0)),
                ),
            ),
        ),
    ),
    Cause(
        12,
        "Attention backend not what the user thinks",
        (
            "ATTN-PACKAGE-BUILT-FOR-OTHER-TORCH",
            "ATTN-PACKAGE-IMPORT-FAILED",
            "ATTN-FLASH-ATTN-NO-KERNELS-FOR-GPU",
            "ATTN-FLASH-ATTN-MISSING",
            "ATTN-SDPA-FLASH-DISABLED",
            "ATTN-SDPA-MATH-ONLY",
            "ATTN-FA3-ON-NON-HOPPER",
            "ATTN-FA3-RESULT-INDEXED",
        ),
        (
            Scenario(
                "SageAttention built for CUDA 11.8 under a CUDA 12.8 torch",
                {
                    "torch": TORCH_27,
                    "packages": {
                        "sageattention": {
                            "name": "sageattention",
                            "installed": True,
                            "version": "2.1.1+cu118torch2.7.0",
                            "build_label": "cu118torch2.7.0",
                            "built_torch": "2.7",
                            "built_cuda": 11.8,
                        }
                    },
                },
                {
                    "torch": TORCH_27,
                    "packages": {
                        "sageattention": {
                            "name": "sageattention",
                            "installed": True,
                            "version": "2.1.1+cu128torch2.7.0",
                            "build_label": "cu128torch2.7.0",
                            "built_torch": "2.7",
                            "built_cuda": 12.8,
                        }
                    },
                },
            ),
            Scenario(
                "flash-attn 2.6.3 on an RTX 5090",
                {
                    "packages": {"flash_attn": {"name": "flash-attn", "installed": True, "version": "2.6.3"}},
                    "nvml": nvml(gpu(name="NVIDIA GeForce RTX 5090", total=34.2, free=33.0, cc=12.0)),
                },
                {
                    "packages": {"flash_attn": {"name": "flash-attn", "installed": True, "version": "2.8.3"}},
                    "nvml": nvml(gpu(name="NVIDIA GeForce RTX 5090", total=34.2, free=33.0, cc=12.0)),
                },
            ),
            Scenario(
                "--deep: flash_attn fails to import next to torch",
                {
                    "torch": {
                        **TORCH_27,
                        "deep": {
                            "ran": True,
                            "import_ok": True,
                            "attention_imports": {
                                "flash_attn": "ImportError: flash_attn_2_cuda.so: undefined symbol: _ZN3c105ErrorC2E"
                            },
                        },
                    }
                },
                {
                    "torch": {
                        **TORCH_27,
                        "deep": {"ran": True, "import_ok": True, "attention_imports": {"flash_attn": "ok"}},
                    }
                },
            ),
            Scenario(
                "official attention takes [0] of a current FA3's output",
                {
                    "repo": {"fa3_result_indexed": True},
                    "packages": {
                        "flash_attn_3": {"installed": True, "version": "3.0.0"},
                        "fa3_varlen_returns": "tensor",
                        "fa3_varlen_returns_from": "the installed flash_attn_interface.py",
                    },
                    "nvml": nvml(gpu(name="NVIDIA H100 80GB HBM3", total=85.0, free=84.0, cc=9.0)),
                },
                {
                    "repo": {"fa3_result_indexed": True},
                    "packages": {
                        "flash_attn_3": {"installed": True, "version": "3.0.0b1"},
                        "fa3_varlen_returns": "tuple",
                        "fa3_varlen_returns_from": "the installed flash_attn_interface.py",
                    },
                    "nvml": nvml(gpu(name="NVIDIA H100 80GB HBM3", total=85.0, free=84.0, cc=9.0)),
                },
            ),
        ),
    ),
    Cause(
        13,
        "fp8 weights without fp8 matmul",
        ("CKPT-FP8-WITHOUT-FP8-MATMUL",),
        (
            Scenario(
                "fp8 DiT on an RTX 3090",
                {
                    "checkpoints": {"models": [{"folder": "diffusion_models", "role": "dit", "main_dtype": "F8_E4M3"}]},
                    "nvml": nvml(gpu(name="NVIDIA GeForce RTX 3090", cc=8.6)),
                },
                {
                    "checkpoints": {"models": [{"folder": "diffusion_models", "role": "dit", "main_dtype": "F8_E4M3"}]},
                    "nvml": nvml(gpu(name="NVIDIA GeForce RTX 4090", cc=8.9)),
                },
            ),
        ),
    ),
    Cause(
        14,
        "fp32 weights under bf16 autocast",
        ("ARGS-FP32-DIT-WITHOUT-CONVERT",),
        (
            Scenario(
                "A14B fp32 experts without --convert_model_dtype",
                {
                    "checkpoints": {
                        "dir": "/m/Wan2.2-T2V-A14B",
                        "dit_main_dtype": "F32",
                        "dit_params": 14_288_901_184,
                        "dit_experts": 2,
                        "dit_bytes_on_disk": 57 * GB,
                    },
                    "repo": {"effective": {"convert_model_dtype": False}},
                },
                {
                    "checkpoints": {
                        "dir": "/m/Wan2.2-T2V-A14B",
                        "dit_main_dtype": "F32",
                        "dit_params": 14_288_901_184,
                        "dit_experts": 2,
                        "dit_bytes_on_disk": 57 * GB,
                    },
                    "repo": {"effective": {"convert_model_dtype": True}},
                },
            ),
        ),
    ),
    Cause(15, "GGUF where bf16 would fit", ("CKPT-GGUF-WHERE-BF16-FITS",)),  # scenarios from real files, below
    Cause(
        16,
        "Pre-Ampere GPUs",
        ("GPU-PRE-AMPERE-BF16",),
        (
            Scenario(
                "Tesla T4",
                {"nvml": nvml(gpu(name="Tesla T4", total=16.0, free=15.0, cc=7.5))},
                {"nvml": nvml(gpu(name="NVIDIA A10G", total=24.0, free=23.0, cc=8.6))},
            ),
        ),
    ),
    Cause(
        17,
        "torch 2.9 with cuDNN 9.8+",
        ("TORCH-29-CUDNN-CONV3D",),
        (
            Scenario(
                "torch 2.9.0 beside nvidia-cudnn-cu12 9.10.2.21, no --deep",
                {
                    "torch": {
                        "installed": True,
                        "version": "2.9.0+cu128",
                        "cuda_build": 12.8,
                        "cudnn_version": 91002,
                        "cudnn_from": "nvidia-cudnn-cu12 9.10.2.21",
                    }
                },
                {
                    "torch": {
                        "installed": True,
                        "version": "2.9.1+cu130",
                        "cuda_build": 13.0,
                        "cudnn_version": 91500,
                        "cudnn_from": "nvidia-cudnn-cu13 9.15.0.57",
                    }
                },
            ),
        ),
    ),
    Cause(
        18,
        "torch.compile cold start and recompiles",
        ("CODE-COMPILE-ON-PATH", "TORCH-COMPILE-WITHOUT-TRITON"),
        not_caught="CODE-COMPILE-ON-PATH says it at info level only; the recompiles per block need the dynamo "
        "cache limit and how compile is applied (per block, inside a loop), which the code walk does not record",
    ),
    Cause(
        19,
        "Compile gives nothing: complex-valued RoPE",
        ("CODE-COMPILE-COMPLEX-ROPE",),
        (
            Scenario(
                "a fork compiles WanModel, whose rope_apply is complex",
                {
                    "repo": {
                        "sites": [
                            {"kind": "compile_call", "file": "generate.py", "line": 212},
                            {
                                "kind": "complex_rope",
                                "file": "wan/modules/model.py",
                                "line": 51,
                                "function": "rope_apply",
                            },
                        ]
                    }
                },
                {
                    "repo": {
                        "sites": [
                            {
                                "kind": "complex_rope",
                                "file": "wan/modules/model.py",
                                "line": 51,
                                "function": "rope_apply",
                            }
                        ]
                    }
                },
            ),
        ),
    ),
    Cause(
        20,
        "Full steps with CFG where a distilled setup is meant",
        ("ARGS-FULL-STEPS-WITH-DISTILLED",),
        (
            Scenario(
                "LightX2V checkpoint, steps and guidance from the task config (40, 5.0)",
                {
                    "checkpoints": {"models": [{"folder": "Wan2.1-T2V-14B-lightx2v-4step", "role": "dit"}]},
                    "repo": {"effective": {"sample_steps": 40, "sample_guide_scale": 5.0}},
                },
                {
                    "checkpoints": {"models": [{"folder": "Wan2.1-T2V-14B-lightx2v-4step", "role": "dit"}]},
                    "repo": {"effective": {"sample_steps": 8, "sample_guide_scale": 1.0}},
                },
            ),
            Scenario(
                "A14B Lightning LoRA, steps resolved, guidance left unresolved",
                {
                    "checkpoints": {
                        "files": [{"path": "loras/Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH.safetensors"}]
                    },
                    "repo": {"effective": {"sample_steps": 40}},
                },
                {
                    "checkpoints": {
                        "files": [{"path": "loras/Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH.safetensors"}]
                    },
                    "repo": {"effective": {"sample_steps": 4}},
                },
            ),
        ),
        checks=("never-says-none",),
    ),
    Cause(
        21,
        "Text encoder on the CPU",
        ("ARGS-T5-CPU-WHERE-T5-FITS", "ENV-OMP-ONE-THREAD-T5-CPU"),
        (
            Scenario(
                "--t5_cpu on an 80 GB card",
                with_(
                    LINUX_H100, estimate=T2V_14B_ESTIMATE, repo={"effective": {"t5_cpu": True, "offload_model": False}}
                ),
                with_(
                    LINUX_H100, estimate=T2V_14B_ESTIMATE, repo={"effective": {"t5_cpu": False, "offload_model": False}}
                ),
            ),
        ),
    ),
    Cause(22, "VAE decode dominates", (), no_signal=True),
    Cause(
        23,
        "Slow model loads",
        ("CKPT-SLOW-STORAGE", "SYS-WSL-CKPT-ON-WINDOWS-DRIVE"),
        (
            Scenario(
                "A14B on a SATA hard disk",
                {
                    "checkpoints": {
                        "dir": "/data/Wan2.2-T2V-A14B",
                        "found": True,
                        "models": [
                            {"folder": "high_noise_model", "bytes": 57 * GB},
                            {"folder": "low_noise_model", "bytes": 57 * GB},
                        ],
                        "storage": {"fstype": "ext4", "device": "/dev/sdb1", "disk": "sdb", "rotational": True},
                    }
                },
                {
                    "checkpoints": {
                        "dir": "/data/Wan2.2-T2V-A14B",
                        "found": True,
                        "models": [
                            {"folder": "high_noise_model", "bytes": 57 * GB},
                            {"folder": "low_noise_model", "bytes": 57 * GB},
                        ],
                        "storage": {
                            "fstype": "ext4",
                            "device": "/dev/nvme0n1p2",
                            "disk": "nvme0n1",
                            "rotational": False,
                        },
                    }
                },
            ),
            Scenario(
                "an NFS share measured at 95 MiB/s (--deep)",
                {
                    "checkpoints": {
                        "dir": "/mnt/nas/Wan2.1-T2V-14B",
                        "found": True,
                        "models": [{"folder": "x", "bytes": 57 * GB}],
                        "storage": {"fstype": "nfs4", "device": "nas:/export", "network": True, "read_mib_s": 95.0},
                    }
                },
                {
                    "checkpoints": {
                        "dir": "/mnt/nas/Wan2.1-T2V-14B",
                        "found": True,
                        "models": [{"folder": "x", "bytes": 57 * GB}],
                        "storage": {"fstype": "nfs4", "device": "nas:/export", "network": True, "read_mib_s": 1100.0},
                    }
                },
            ),
        ),
    ),
    Cause(
        24,
        "CPU-only torch, Mac forks on x86, broken ROCm/ZLUDA",
        (
            "TORCH-CPU-WHEEL-ON-GPU-MACHINE",
            "TORCH-ROCM-NO-AMD-GPU",
            "TORCH-ROCM-NO-HIP-RUNTIME",
            "TORCH-ZLUDA",
            "TORCH-MAC-X86",
            "GPU-NVML-SEES-GPU-TORCH-DOES-NOT",
        ),
        (
            Scenario(
                "a CPU-only wheel beside an RTX 4090",
                {"torch": {"installed": True, "version": "2.7.1+cpu", "is_cpu_build": True}, "nvml": nvml(gpu())},
                {"torch": TORCH_27, "nvml": nvml(gpu())},
            ),
            Scenario(
                "a ROCm torch in a container without /dev/kfd",
                {
                    "torch": {
                        "installed": True,
                        "version": "2.5.1+rocm6.2",
                        "hip_build": "6.2.41133",
                        "hip_runtime": True,
                    },
                    "amd": {"checked": True, "kfd": False},
                },
                {
                    "torch": {
                        "installed": True,
                        "version": "2.5.1+rocm6.2",
                        "hip_build": "6.2.41133",
                        "hip_runtime": True,
                    },
                    "amd": {"checked": True, "kfd": True, "gpus": [{"node": 1, "gfx": "gfx1100"}]},
                },
            ),
            Scenario(
                "ZLUDA's stand-ins in torch/lib, no kernel cache yet",
                {
                    "torch": {
                        "installed": True,
                        "version": "2.7.0+cu118",
                        "cuda_build": 11.8,
                        "zluda": "torch/lib/cublas64_11.dll is 0.3 MiB (ZLUDA's stand-in)",
                        "zluda_cache": False,
                    }
                },
                {"torch": {"installed": True, "version": "2.7.0+cu118", "cuda_build": 11.8}},
            ),
            Scenario(
                "an x86_64 Python under Rosetta on Apple silicon",
                {
                    "platform": {"os": "Darwin", "machine": "x86_64", "rosetta": True},
                    "torch": {"installed": True, "version": "2.2.2"},
                },
                {"platform": {"os": "Darwin", "machine": "arm64"}, "torch": {"installed": True, "version": "2.7.1"}},
            ),
        ),
    ),
    Cause(
        25,
        "Update regressions",
        (
            "ATTN-PACKAGE-BUILT-FOR-OTHER-TORCH",
            "TORCH-29-CUDNN-CONV3D",
            "GIT-DEFAULTS-CHANGED",
            "GIT-BRANCH-CHANGES-HOT-PATH",
        ),
        (
            Scenario(
                "torch updated to 2.7 under flash-attn built for 2.6",
                {
                    "torch": TORCH_27,
                    "packages": {
                        "flash_attn": {
                            "name": "flash-attn",
                            "installed": True,
                            "version": "2.7.4.post1+cu12torch2.6cxx11abiFALSE",
                            "build_label": "cu12torch2.6cxx11abiFALSE",
                            "built_torch": "2.6",
                            "built_cuda": 12.0,
                        }
                    },
                },
                {
                    "torch": TORCH_27,
                    "packages": {
                        "flash_attn": {
                            "name": "flash-attn",
                            "installed": True,
                            "version": "2.8.3+cu12torch2.7cxx11abiTRUE",
                            "build_label": "cu12torch2.7cxx11abiTRUE",
                            "built_torch": "2.7",
                            "built_cuda": 12.0,
                        }
                    },
                },
            ),
        ),
    ),
    Cause(
        26,
        "Sequence parallel over PCIe-only GPUs",
        ("ARGS-SP-OVER-PCIE",),
        (
            Scenario(
                "8 RTX 4090 with --ulysses_size 8",
                {
                    "parallel": {"ulysses_size": 8, "sp_size": 8},
                    "nvml": nvml(
                        *[gpu(i, nvlink_active=0) for i in range(8)], topology=[{"a": 0, "b": 4, "level": "system"}]
                    ),
                },
                {
                    "parallel": {"ulysses_size": 8, "sp_size": 8},
                    "nvml": nvml(
                        *[gpu(i, name="NVIDIA H100 80GB HBM3", cc=9.0, nvlink_active=18) for i in range(8)],
                        topology=[{"a": 0, "b": 4, "level": "same_board"}],
                    ),
                },
            ),
        ),
    ),
)
BY_NUMBER = {c.number: c for c in CAUSES}


def findings(facts: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """`wandoc check --facts FILE --format json`, as a user replays a shared machine."""
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"schema": "wandoc.facts/1", **facts}), encoding="utf-8")
    code, out, err = run_wandoc(["check", "--facts", str(path), "--format", "json", "--fail-on", "never"], capsys)
    assert code == 0, err
    return list(json.loads(out)["findings"])


def judge(cause: Cause, scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = [f for f in findings(scenario.positive, tmp_path, capsys) if f["rule"] in cause.rules]
    assert any(f["severity"] in ("warning", "error") for f in got), f"{scenario.name}: {got}"
    for f in got:
        assert "<" not in f["message"], f["message"]  # a template that failed to render
        if "never-says-none" in cause.checks:
            assert not re.search(r"\bnone\b", f["message"]), f["message"]
    quiet = [f["rule"] for f in findings(scenario.sane, tmp_path, capsys) if f["rule"] in cause.rules]
    assert quiet == [], f"{scenario.name}, sane twin: {quiet}"


@pytest.mark.parametrize("cause", [c for c in CAUSES if c.scenarios], ids=lambda c: f"cause-{c.number}")
def test_cause_is_caught_before_launch(cause: Cause, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for scenario in cause.scenarios:
        judge(cause, scenario, tmp_path, capsys)


def test_cause_15_gguf_from_real_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The GGUF header is read from files written here, then replayed with an 80 GB and a 3 GB card."""
    cause = BY_NUMBER[15]
    q5 = real_gguf_checkpoints(tmp_path / "q5", "Q5_K")
    bf16 = real_gguf_checkpoints(tmp_path / "bf16", "BF16")
    assert q5["dit_params"] > 0 and q5["dit_main_dtype"] == "Q5_K" and bf16["dit_main_dtype"] == "BF16"
    big = nvml(gpu(name="NVIDIA A100-SXM4-80GB", total=85.0, free=84.0, cc=8.0))
    small = nvml(gpu(name="NVIDIA GeForce GTX 1650", total=4.3, free=3.9, cc=7.5))
    judge(cause, Scenario("Q5_K GGUF on 80 GB", {"checkpoints": q5, "nvml": big}, {"checkpoints": q5, "nvml": small}),
          tmp_path, capsys)  # fmt: skip
    judge(cause, Scenario("an F16/BF16 GGUF is not quantised", {"checkpoints": q5, "nvml": big},
                          {"checkpoints": bf16, "nvml": big}), tmp_path, capsys)  # fmt: skip


def test_ram_verdict_names_an_idle_expert_only_where_there_are_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ti2v-5B has one DiT: with offload off its models still load to the CPU first, but there is no idle expert to
    park (the message said there was, for every task)."""
    small_ram = {"ram_total_bytes": 24 * GB, "ram_available_bytes": 22 * GB}
    one = {"task": "ti2v-5B", "known": True, "dit_experts": 1, "offloaded_bytes": 31 * GB}
    two = {**A14B_ESTIMATE, "offloaded_bytes": 68 * GB}
    texts = {}
    for name, est in (("one", one), ("two", two)):
        facts = {"system": small_ram, "estimate": est, "repo": {"effective": {"offload_model": False}}}
        [f] = [f for f in findings(facts, tmp_path, capsys) if f["rule"] == "SYS-RAM-SWAP-TOO-SMALL-FOR-OFFLOAD"]
        texts[name] = f["message"]
        texts[name + " fix"] = f["fix"]
    assert "load to the CPU first" in texts["one"] and "expert" not in texts["one"]
    assert "parks the idle expert there" in texts["two"]
    assert "smaller (use a smaller task)" in texts["one fix"]  # one way left: no dangling "or"


def test_fp32_verdict_says_per_expert_only_where_there_are_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = {}
    for experts, params in ((1, 5 * 10**9), (2, 14 * 10**9)):
        ckpt = {"dir": "/ckpt", "found": True, "dit_main_dtype": "F32", "dit_experts": experts,
                "dit_params": params, "dit_bytes_on_disk": params * 4}  # fmt: skip
        facts = {"checkpoints": ckpt, "repo": {"effective": {"convert_model_dtype": False}}}
        [f] = [f for f in findings(facts, tmp_path, capsys) if f["rule"] == "ARGS-FP32-DIT-WITHOUT-CONVERT"]
        texts[experts] = f["message"]
    assert "expert" not in texts[1]
    assert "per expert, 2 experts" in texts[2] and texts[2].count("per expert") == 2


def test_flash_attn_fix_names_a_cuda_build_it_can_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CPU-only torch has no CUDA version to build flash-attn for (the fix said "CUDA 0")."""
    site = {"kind": "flash_attention_call", "file": "wan/modules/model.py", "line": 145, "on_path": True}
    fixes = {}
    for name, torch in (("cpu", {"version": "2.13.0+cpu", "is_cpu_build": True}),
                        ("cuda", {"version": "2.8.0+cu128", "cuda_build": 12.8})):  # fmt: skip
        facts = {"torch": {"installed": True, **torch}, "repo": {"flash_attn_required": True, "sites": [site]}}
        [f] = [f for f in findings(facts, tmp_path, capsys) if f["rule"] == "ATTN-FLASH-ATTN-MISSING"]
        fixes[name] = f["fix"]
    assert "CUDA 0" not in fixes["cpu"] and "Install a CUDA build of torch first" in fixes["cpu"]
    assert "built for torch 2.8.0+cu128 and CUDA 12.8" in fixes["cuda"]


def test_causes_without_a_scenario_say_why() -> None:
    for cause in CAUSES:
        if cause.number == 15:
            continue
        assert bool(cause.scenarios) != bool(cause.no_signal or cause.not_caught), cause.number


# -- the count and the table in docs/slow-causes.md ---------------------------------------------------------


def caught(cause: Cause) -> bool:
    return (bool(cause.scenarios) or cause.number == 15) and not cause.pending and not cause.not_caught


def test_the_count() -> None:
    with_signal = [c for c in CAUSES if not c.no_signal]
    assert len(CAUSES) == 26 and len(with_signal) == 22
    assert sum(caught(c) for c in with_signal) >= 20


def doc_rows() -> dict[int, tuple[str, str]]:
    rows: dict[int, tuple[str, str]] = {}
    for line in (ROOT / "docs" / "slow-causes.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|[^|]*\|([^|]*)\|([^|]*)\|", line)
        if match:
            rows[int(match.group(1))] = (match.group(2).strip(), match.group(3).strip())
    return rows


def test_docs_table_matches_the_scoreboard() -> None:
    rows = doc_rows()
    assert sorted(rows) == [c.number for c in CAUSES]
    for cause in CAUSES:
        before, during = rows[cause.number]
        if cause.no_signal:
            assert before.startswith("no pre-launch signal"), cause.number
        else:
            assert re.findall(r"`([A-Z0-9-]+)`", before) == list(cause.rules), cause.number
            assert ("pending" in before) == bool(cause.pending), cause.number
            assert ("not caught" in before) == bool(cause.not_caught), cause.number
        assert during, cause.number  # the run-time column is held by tests/test_slow_causes_during_run.py
    text = (ROOT / "docs" / "slow-causes.md").read_text(encoding="utf-8")
    count = sum(caught(c) for c in CAUSES if not c.no_signal)
    assert f"**{count} of 22**" in text


# -- facts recorded before these facts existed --------------------------------------------------------------

ADDED: dict[str, tuple[str, ...]] = {
    "platform": ("rosetta",),
    "torch": ("cudnn_version", "cudnn_from", "hip_runtime", "zluda", "zluda_cache"),
    "nvml": ("topology",),
    "packages": ("fa3_varlen_returns", "fa3_varlen_returns_from"),
    "checkpoints": ("storage",),
}


def recorded_earlier(tree: dict[str, Any]) -> dict[str, Any]:
    """A facts tree as a version before the catalog's facts wrote it."""
    old = json.loads(json.dumps(tree))
    old.pop("amd", None)
    for branch, names in ADDED.items():
        for name in names:
            old.get(branch, {}).pop(name, None)
    old.get("torch", {}).get("deep", {}).pop("attention_imports", None)
    for g in old.get("nvml", {}).get("gpus", []):
        g.pop("other_processes_from", None)
        g.pop("nvlink_active", None)
    for pkg in old.get("packages", {}).values():
        if isinstance(pkg, dict):
            for name in ("name", "build_label", "built_torch", "built_cuda"):
                pkg.pop(name, None)
    return old


@pytest.mark.parametrize("machine", sorted(p.name for p in (ROOT / "tests" / "fixtures" / "machines").glob("*.json")))
def test_facts_recorded_before_replay_the_same(
    machine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = json.loads((ROOT / "tests" / "fixtures" / "machines" / machine).read_text(encoding="utf-8"))
    old = recorded_earlier(tree)
    assert "amd" not in old and "storage" not in old["checkpoints"]
    now = sorted((f["rule"], f["message"]) for f in findings(tree, tmp_path, capsys))
    assert sorted((f["rule"], f["message"]) for f in findings(old, tmp_path, capsys)) == now
