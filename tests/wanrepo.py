"""Builders of Wan-like checkouts for tests: plain files plus real ``git`` history, in a temp dir.

``make_founding_story_repo`` rebuilds the shape of the story the product was born from: an Electron app whose
launchers set ``WAN_FORCE_FP16`` / ``WAN_COMPILE``, Wan code under ``Wan2.2/``, a slow attention that was on the
run's path for one commit and then survived only as a backup file nothing imports, and ``well`` / ``main``
branches whose tips differ only off the path. The Python here only has to parse; it is never run.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

GENERATE_PY = '''\
"""Make a video from a prompt."""
import argparse
import logging
import os

import wan
from wan.configs import WAN_CONFIGS
from wan.utils.utils import str2bool


def _parse_args():
    parser = argparse.ArgumentParser(description="make a video")
    parser.add_argument("--task", type=str, default="ti2v-5B", choices=["t2v-A14B", "i2v-A14B", "ti2v-5B"])
    parser.add_argument("--size", type=str, default="1280*704")
    parser.add_argument("--frame_num", type=int, default=None)
    parser.add_argument("--ckpt_dir", type=str, default=None)
    parser.add_argument("--offload_model", type=str2bool, default=None, help="move models to the CPU between uses")
    parser.add_argument("--convert_model_dtype", action="store_true", default=False)
    parser.add_argument("--t5_cpu", action="store_true", default=False)
    parser.add_argument("--sample_steps", type=int, default=None)
    parser.add_argument("--sample_guide_scale", type=float, default=5.0)
    parser.add_argument("--prompt", type=str, default=None)
    parser.add_argument("--use_prompt_extend", action="store_true", default=False)
    return parser.parse_args()


def _extend(prompt):
    from wan.utils.prompt_extend import extend_prompt

    return extend_prompt(prompt)


def generate(args):
    rank = int(os.getenv("RANK", 0))
    world_size = int(os.getenv("WORLD_SIZE", 1))
    if args.offload_model is None:
        args.offload_model = False if world_size > 1 else True
        logging.info("offload_model not given: %s", args.offload_model)
    if args.sample_steps is None:
        args.sample_steps = 50
    cfg = WAN_CONFIGS[args.task]
    if args.frame_num is None:
        args.frame_num = cfg.frame_num
    prompt = _extend(args.prompt) if args.use_prompt_extend else args.prompt
    pipe = wan.WanTI2V(cfg, args.ckpt_dir, rank=rank, t5_cpu=args.t5_cpu, convert=args.convert_model_dtype)
    return pipe.generate(prompt, steps=args.sample_steps, offload_model=args.offload_model)


if __name__ == "__main__":
    generate(_parse_args())
'''

WAN_INIT = """\
from . import configs, modules
from .textimage2video import WanTI2V
"""

CONFIGS_INIT = """\
import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"


class _Cfg:
    def __init__(self, frame_num, steps):
        self.frame_num = frame_num
        self.sample_steps = steps


WAN_CONFIGS = {"t2v-A14B": _Cfg(81, 40), "i2v-A14B": _Cfg(81, 40), "ti2v-5B": _Cfg(121, 50)}
"""

UTILS_PY = """\
import argparse


def str2bool(v):
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected.")
"""

PROMPT_EXTEND_PY = """\
import os


def extend_prompt(prompt):
    key = os.environ.get("DASH_API_KEY")
    if not key:
        return prompt
    return prompt + ", cinematic"
"""

MODULES_INIT = """\
from .attention import attention
from .model import WanModel
"""

MODEL_PY = """\
import math

import torch
import torch.nn as nn

from .attention import attention


class WanSelfAttention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.o = nn.Linear(dim, dim)

    def forward(self, x, seq_lens):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, d // self.num_heads).unbind(2)
        out = attention(q, k, v, q_lens=seq_lens, k_lens=seq_lens)
        return self.o(out.flatten(2))


class WanAttentionBlock(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.self_attn = WanSelfAttention(dim, num_heads)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

    def forward(self, x, seq_lens):
        x = x + self.self_attn(self.norm(x), seq_lens)
        return x + self.ffn(self.norm(x))


class WanModel(nn.Module):
    def __init__(self, dim=64, num_heads=4, num_layers=2):
        super().__init__()
        self.blocks = nn.ModuleList(WanAttentionBlock(dim, num_heads) for _ in range(num_layers))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x, seq_lens):
        for block in self.blocks:
            x = block(x, seq_lens)
        return x.float()
"""

FAST_ATTENTION_PY = """\
import torch
import torch.nn.functional as F

try:
    import flash_attn  # noqa: F401

    FLASH_ATTN_AVAILABLE = True
except ImportError:
    FLASH_ATTN_AVAILABLE = False


def attention(q, k, v, q_lens=None, k_lens=None, causal=False):
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out.transpose(1, 2).contiguous()
"""

SLOW_ATTENTION_PY = """\
import os

import torch
import torch.nn.functional as F

FORCE_FP16 = os.environ.get("WAN_FORCE_FP16", "0") == "1"
USE_COMPILE = os.getenv("WAN_COMPILE", "0") == "1"
USE_SDPA = os.environ.get("USE_SDPA", "1") == "1"
CHUNK = 64


def _dense_mask(q_lens, k_lens, lq, lk, device):
    b = q_lens.shape[0]
    mask = torch.zeros(b, 1, lq, lk, dtype=torch.bool, device=device)
    for i in range(b):
        ql = int(q_lens[i].item())
        kl = int(k_lens[i].item())
        mask[i, :, :ql, :kl] = True
    return mask


def _chunked(q, k, v, mask):
    outs = []
    for start in range(0, q.shape[2], CHUNK):
        qc = q[:, :, start : start + CHUNK]
        scores = qc @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
        scores = scores.masked_fill(~mask[:, :, start : start + CHUNK], float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ v)
    return torch.cat(outs, dim=2)


def attention(q, k, v, q_lens=None, k_lens=None, causal=False):
    dtype = torch.float16 if FORCE_FP16 else torch.bfloat16
    q, k, v = (t.transpose(1, 2).to(dtype) for t in (q, k, v))
    mask = _dense_mask(q_lens, k_lens, q.shape[2], k.shape[2], q.device)
    if os.name == "nt" and q.shape[2] > 4096:
        out = _chunked(q, k, v, mask)
    else:
        with torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True, enable_mem_efficient=True):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).contiguous()
"""

PIPELINE_PY = """\
import torch

from .modules.model import WanModel


class WanTI2V:
    def __init__(self, config, checkpoint_dir, rank=0, t5_cpu=False, convert=False):
        self.config = config
        self.model = WanModel()
        if convert:
            self.model.to(torch.bfloat16)

    def generate(self, prompt, steps=50, offload_model=True):
        x = torch.randn(1, 16, 64, device="cuda")
        lens = torch.tensor([16])
        self.model.to("cuda")
        for _ in range(steps):
            x = x - 0.02 * self.model(x, lens)
        if offload_model:
            self.model.cpu()
            torch.cuda.empty_cache()
        return x
"""

DIAG_GPU_PY = '''\
"""Print what the GPU looks like from a fresh process."""
import os

import torch

if os.environ.get("WAN_COMPILE") == "1":
    print("compile requested")
print("allocated", torch.cuda.memory_allocated())
'''

DIAG_GPU_WELL_PY = DIAG_GPU_PY + 'print("reserved", torch.cuda.memory_reserved())\n'

PACKAGE_JSON = """\
{
  "name": "wan-desktop",
  "version": "0.1.0",
  "main": "main.js",
  "scripts": {"start": "electron ."}
}
"""

MAIN_JS = """\
const { app } = require('electron');
const { spawn } = require('child_process');
const path = require('path');

function runWan(args) {
  // the settings the user believed made generation fast
  const child = spawn('python', [path.join(__dirname, 'Wan2.2', 'generate.py'), ...args], {
    cwd: path.join(__dirname, 'Wan2.2'),
    env: { ...process.env, WAN_FORCE_FP16: '1', WAN_COMPILE: '1' },
  });
  return child;
}

app.whenReady().then(() => runWan(['--task', 'ti2v-5B']));
"""

RUN_WAN_BAT = """\
@echo off
rem launch generation with the fast settings
set WAN_FORCE_FP16=1
set "WAN_COMPILE=1"
cd Wan2.2
python generate.py --task ti2v-5B --size 1280*704 --offload_model True --convert_model_dtype %*
"""

README = "# wan-desktop\n\nA desktop front end for Wan video generation.\n"


def wan_files(attention: str = FAST_ATTENTION_PY) -> dict[str, str]:
    """The Wan checkout's files (relative to the checkout), with the given attention.py."""
    return {
        "generate.py": GENERATE_PY,
        "wan/__init__.py": WAN_INIT,
        "wan/configs/__init__.py": CONFIGS_INIT,
        "wan/utils/__init__.py": "",
        "wan/utils/utils.py": UTILS_PY,
        "wan/utils/prompt_extend.py": PROMPT_EXTEND_PY,
        "wan/modules/__init__.py": MODULES_INIT,
        "wan/modules/model.py": MODEL_PY,
        "wan/modules/attention.py": attention,
        "wan/textimage2video.py": PIPELINE_PY,
        "diag_gpu.py": DIAG_GPU_PY,
    }


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def git(cwd: Path, *args: str) -> str:
    """Run git for a fixture, isolated from the user's git config (no signing, no hooks, fixed identity)."""
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Fixture",
        "GIT_AUTHOR_EMAIL": "fixture@example.invalid",
        "GIT_COMMITTER_NAME": "Fixture",
        "GIT_COMMITTER_EMAIL": "fixture@example.invalid",
    }
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


# the slow attention patterns the founding story planted, as site kinds
SLOW_KINDS = {"sdpa_flash_disabled", "mask_per_call", "item_in_forward", "python_loop_kernel"}
# those that run on this machine: the chunk loop runs only on Windows (``if os.name == "nt" and ...``), elsewhere
# the doctor knows it never runs, and a comparison does not count it
SLOW_KINDS_HERE = SLOW_KINDS if os.name == "nt" else SLOW_KINDS - {"python_loop_kernel"}


@dataclass
class FoundingStory:
    app: Path  # the app repo, ``main`` checked out
    checkout: Path  # app/Wan2.2
    well_app: Path  # a second working tree of the same repo with ``well`` checked out
    well_checkout: Path
    slow_sha: str  # main's commit that put the slow attention on the run's path
    revert_sha: str  # main's commit that put plain SDPA back and kept the backup file


def make_founding_story_repo(tmp: Path) -> FoundingStory:
    app = tmp / "wan-desktop"
    app.mkdir(parents=True)
    git(app, "init", "-q", "-b", "main")
    write_files(
        app, {"package.json": PACKAGE_JSON, "main.js": MAIN_JS, "run_wan.bat": RUN_WAN_BAT, "README.md": README}
    )
    write_files(app / "Wan2.2", wan_files())
    commit_all(app, "desktop app with Wan2.2")
    git(app, "branch", "well")

    write_files(app / "Wan2.2", {"wan/modules/attention.py": SLOW_ATTENTION_PY})
    slow_sha = commit_all(app, "attention: no flash kernel, dense mask, env switches, chunking on Windows")
    write_files(
        app / "Wan2.2",
        {"wan/modules/attention.py": FAST_ATTENTION_PY, "wan/modules/attention_main_backup.py": SLOW_ATTENTION_PY},
    )
    revert_sha = commit_all(app, "attention: back to plain SDPA (old version kept as a backup)")

    git(app, "checkout", "-q", "well")
    write_files(app / "Wan2.2", {"diag_gpu.py": DIAG_GPU_WELL_PY})
    commit_all(app, "diag: also print reserved memory")
    git(app, "checkout", "-q", "main")
    git(app, "merge", "-q", "--no-ff", "-m", "merge well", "well")

    well_app = tmp / "wan-desktop-well"
    git(app, "worktree", "add", "-q", str(well_app), "well")
    return FoundingStory(app, app / "Wan2.2", well_app, well_app / "Wan2.2", slow_sha, revert_sha)


def make_simple_wan_repo(tmp: Path, attention: str = FAST_ATTENTION_PY) -> Path:
    """A one-branch Wan checkout at ``tmp/wan`` with one commit."""
    root = tmp / "wan"
    root.mkdir(parents=True)
    write_files(root, wan_files(attention))
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "wan checkout")
    return root


# -- the official package (wan22 on PyPI) --------------------------------------------------------------

WAN22_VERSION = "2.2.11"
WAN22_WHEEL = f"wan22-{WAN22_VERSION}-py3-none-any.whl"

# A stand-in for the official generate.py (which the wheel does not ship), written with its shape: the same
# imports, flags (choices from the configs), argument checks and defaults from the task's config, the
# offload default, the task -> pipeline dispatch and each pipeline's generate call.
OFFICIAL_ENTRY = """\
import argparse
import logging
import os
import random
import sys

import torch.distributed as dist
from PIL import Image

import wan
from wan.configs import MAX_AREA_CONFIGS, SIZE_CONFIGS, SUPPORTED_SIZES, WAN_CONFIGS
from wan.distributed.util import init_distributed_group
from wan.utils.prompt_extend import DashScopePromptExpander, QwenPromptExpander
from wan.utils.utils import save_video, str2bool


def _validate_args(args):
    assert args.ckpt_dir is not None, "Please specify the checkpoint directory."
    assert args.task in WAN_CONFIGS, f"Unsupport task: {args.task}"
    if args.task == "i2v-A14B":
        assert args.image is not None, "Please specify the image path for i2v."
    cfg = WAN_CONFIGS[args.task]
    if args.sample_steps is None:
        args.sample_steps = cfg.sample_steps
    if args.sample_shift is None:
        args.sample_shift = cfg.sample_shift
    if args.sample_guide_scale is None:
        args.sample_guide_scale = cfg.sample_guide_scale
    if args.frame_num is None:
        args.frame_num = cfg.frame_num
    args.base_seed = args.base_seed if args.base_seed >= 0 else random.randint(0, sys.maxsize)
    if "s2v" not in args.task:
        assert args.size in SUPPORTED_SIZES[args.task], f"Unsupport size {args.size} for task {args.task}"


def _parse_args():
    parser = argparse.ArgumentParser(description="Generate a video with Wan")
    parser.add_argument("--task", type=str, default="t2v-A14B", choices=list(WAN_CONFIGS.keys()))
    parser.add_argument("--size", type=str, default="1280*720", choices=list(SIZE_CONFIGS.keys()))
    parser.add_argument("--frame_num", type=int, default=None)
    parser.add_argument("--ckpt_dir", type=str, default=None)
    parser.add_argument("--offload_model", type=str2bool, default=None)
    parser.add_argument("--ulysses_size", type=int, default=1)
    parser.add_argument("--t5_fsdp", action="store_true", default=False)
    parser.add_argument("--t5_cpu", action="store_true", default=False)
    parser.add_argument("--dit_fsdp", action="store_true", default=False)
    parser.add_argument("--save_file", type=str, default=None)
    parser.add_argument("--prompt", type=str, default=None)
    parser.add_argument("--use_prompt_extend", action="store_true", default=False)
    parser.add_argument("--prompt_extend_method", type=str, default="local_qwen", choices=["dashscope", "local_qwen"])
    parser.add_argument("--base_seed", type=int, default=-1)
    parser.add_argument("--image", type=str, default=None)
    parser.add_argument("--audio", type=str, default=None)
    parser.add_argument("--src_root_path", type=str, default=None)
    parser.add_argument("--sample_solver", type=str, default="unipc", choices=["unipc", "dpm++"])
    parser.add_argument("--sample_steps", type=int, default=None)
    parser.add_argument("--sample_shift", type=float, default=None)
    parser.add_argument("--sample_guide_scale", type=float, default=None)
    parser.add_argument("--convert_model_dtype", action="store_true", default=False)
    args = parser.parse_args()
    _validate_args(args)
    return args


def generate(args):
    rank = int(os.getenv("RANK", 0))
    world_size = int(os.getenv("WORLD_SIZE", 1))
    local_rank = int(os.getenv("LOCAL_RANK", 0))
    device = local_rank
    if args.offload_model is None:
        args.offload_model = False if world_size > 1 else True
        logging.info(f"offload_model is not specified, set to {args.offload_model}.")
    if world_size > 1:
        dist.init_process_group(backend="nccl", init_method="env://", rank=rank, world_size=world_size)
    if args.ulysses_size > 1:
        init_distributed_group()
    if args.use_prompt_extend:
        if args.prompt_extend_method == "dashscope":
            prompt_expander = DashScopePromptExpander(task=args.task, is_vl=args.image is not None)
        else:
            prompt_expander = QwenPromptExpander(task=args.task, is_vl=args.image is not None, device=rank)
        args.prompt = prompt_expander(args.prompt, seed=args.base_seed).prompt
    cfg = WAN_CONFIGS[args.task]
    img = None
    if args.image is not None:
        img = Image.open(args.image).convert("RGB")
    common = dict(config=cfg, checkpoint_dir=args.ckpt_dir, device_id=device, rank=rank,
                  t5_fsdp=args.t5_fsdp, dit_fsdp=args.dit_fsdp, use_sp=(args.ulysses_size > 1),
                  t5_cpu=args.t5_cpu, convert_model_dtype=args.convert_model_dtype)
    if "t2v" in args.task:
        wan_t2v = wan.WanT2V(**common)
        video = wan_t2v.generate(args.prompt, size=SIZE_CONFIGS[args.size], frame_num=args.frame_num,
                                 shift=args.sample_shift, sample_solver=args.sample_solver,
                                 sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                 seed=args.base_seed, offload_model=args.offload_model)
    elif "ti2v" in args.task:
        wan_ti2v = wan.WanTI2V(**common)
        video = wan_ti2v.generate(args.prompt, img=img, size=SIZE_CONFIGS[args.size],
                                  max_area=MAX_AREA_CONFIGS[args.size], frame_num=args.frame_num,
                                  shift=args.sample_shift, sample_solver=args.sample_solver,
                                  sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                  seed=args.base_seed, offload_model=args.offload_model)
    elif "animate" in args.task:
        wan_animate = wan.WanAnimate(**common)
        video = wan_animate.generate(src_root_path=args.src_root_path, clip_len=args.frame_num,
                                     shift=args.sample_shift, sample_solver=args.sample_solver,
                                     sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                     seed=args.base_seed, offload_model=args.offload_model)
    elif "s2v" in args.task:
        wan_s2v = wan.WanS2V(**common)
        video = wan_s2v.generate(input_prompt=args.prompt, ref_image_path=args.image, audio_path=args.audio,
                                 max_area=MAX_AREA_CONFIGS[args.size], shift=args.sample_shift,
                                 sample_solver=args.sample_solver, sampling_steps=args.sample_steps,
                                 guide_scale=args.sample_guide_scale, seed=args.base_seed,
                                 offload_model=args.offload_model)
    else:
        wan_i2v = wan.WanI2V(**common)
        video = wan_i2v.generate(args.prompt, img, max_area=MAX_AREA_CONFIGS[args.size], frame_num=args.frame_num,
                                 shift=args.sample_shift, sample_solver=args.sample_solver,
                                 sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                 seed=args.base_seed, offload_model=args.offload_model)
    if rank == 0:
        save_video(tensor=video[None], save_file=args.save_file or "out.mp4", fps=cfg.sample_fps)


if __name__ == "__main__":
    args = _parse_args()
    generate(args)
"""


def wheel_cache_dir() -> Path:
    return Path(os.environ.get("WANDOC_TEST_CACHE", Path.home() / ".cache" / "wandoc-tests"))


def fetch_wan22_wheel(timeout: float = 120.0) -> Path | None:
    """The wan22 wheel from the cache, else ``pip download --no-deps``; None when it cannot be had."""
    import sys

    cache = wheel_cache_dir()
    wheel = cache / WAN22_WHEEL
    if wheel.is_file():
        return wheel
    try:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             f"wan22=={WAN22_VERSION}", "-d", str(cache)],
            capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return wheel if wheel.is_file() else None


def make_official_checkout(wheel: Path, dest: Path) -> Path:
    """The wheel's ``wan/`` package unpacked at ``dest`` with a generate-like entry beside it."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("wan/") and not name.endswith("/"):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    (dest / "generate.py").write_text(OFFICIAL_ENTRY, encoding="utf-8")
    return dest
