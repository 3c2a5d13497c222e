"""A Wan-like checkout that really runs: the official ``WanModel`` and ``FlowUniPCMultistepScheduler``.

The model and scheduler files come from the ``wan22`` wheel at build time (nothing of Wan is kept in this
repository); the rest (``generate.py`` with the official CLI shape, a text-to-video pipeline, a toy T5 and VAE
with the official class names, an attention with an SDPA fallback) is written here. The checkpoint is a tiny
random ``WanModel`` saved with ``save_pretrained``, so the pipeline loads it the official way.

History, on ``main``: a fast commit, then one commit per regression the way forks get them, each on its own so
bisect has something to find, and a ``fast`` branch at the first commit:
  1. fast: SDPA attention, weights converted with ``--convert_model_dtype``
  2. docs: a README line (nothing on the run's path)
  3. slow attention: the flash kernel disabled, a dense mask built per call with ``.item()``, a chunk loop
  4. fp32 weights: the loader forces float32 whatever ``--convert_model_dtype`` says
  5. CPU module: the text embedding kept on the CPU "to save VRAM"
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from wanrepo import UTILS_PY as WANREPO_UTILS_PY
from wanrepo import commit_all, git, write_files

GENERATE_PY = '''\
"""Generate a video from a prompt."""
import argparse
import logging
import os

import torch
import torch.distributed as dist

from wan.configs import SIZE_CONFIGS, WAN_CONFIGS
from wan.text2video import WanT2V
from wan.utils.utils import save_video, str2bool


def _parse_args():
    parser = argparse.ArgumentParser(description="Generate a video from a prompt")
    parser.add_argument("--task", type=str, default="t2v-tiny", choices=list(WAN_CONFIGS))
    parser.add_argument("--size", type=str, default="64*64", choices=list(SIZE_CONFIGS))
    parser.add_argument("--frame_num", type=int, default=None)
    parser.add_argument("--ckpt_dir", type=str, default=None)
    parser.add_argument("--offload_model", type=str2bool, default=None, help="move the model to the CPU after use")
    parser.add_argument("--ulysses_size", type=int, default=1)
    parser.add_argument("--dit_fsdp", action="store_true", default=False)
    parser.add_argument("--t5_fsdp", action="store_true", default=False)
    parser.add_argument("--t5_cpu", action="store_true", default=False)
    parser.add_argument("--convert_model_dtype", action="store_true", default=False)
    parser.add_argument("--save_file", type=str, default=None)
    parser.add_argument("--prompt", type=str, default="a cat surfing a wave at sunset")
    parser.add_argument("--base_seed", type=int, default=42)
    parser.add_argument("--sample_steps", type=int, default=None)
    parser.add_argument("--sample_shift", type=float, default=None)
    parser.add_argument("--sample_guide_scale", type=float, default=5.0)
    return parser.parse_args()


def generate(args):
    rank = int(os.getenv("RANK", 0))
    world_size = int(os.getenv("WORLD_SIZE", 1))
    local_rank = int(os.getenv("LOCAL_RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.ERROR, format="[%(asctime)s] %(message)s")
    if args.offload_model is None:
        args.offload_model = False if world_size > 1 else True
        logging.info(f"offload_model is not specified, set to {args.offload_model}.")
    if world_size > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    cfg = WAN_CONFIGS[args.task]
    if args.sample_steps is None:
        args.sample_steps = cfg["sample_steps"]
    if args.sample_shift is None:
        args.sample_shift = cfg["sample_shift"]
    if args.frame_num is None:
        args.frame_num = cfg["frame_num"]
    if args.ckpt_dir is None:
        raise SystemExit("--ckpt_dir is required")

    pipe = WanT2V(cfg, args.ckpt_dir, device, t5_cpu=args.t5_cpu, convert_model_dtype=args.convert_model_dtype)
    video = pipe.generate(
        args.prompt,
        size=SIZE_CONFIGS[args.size],
        frame_num=args.frame_num,
        shift=args.sample_shift,
        sampling_steps=args.sample_steps,
        guide_scale=args.sample_guide_scale,
        seed=args.base_seed + rank,
        offload_model=args.offload_model,
    )
    if rank == 0:
        save_file = args.save_file or f"{args.task}_{args.size.replace('*', 'x')}.npy"
        logging.info(f"Saving generated video to {save_file}")
        save_video(video[None], save_file=save_file)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    logging.info("Finished.")


if __name__ == "__main__":
    generate(_parse_args())
'''

CONFIGS_PY = '''\
"""Task configurations."""
import torch

_COMMON = dict(
    t5_dtype=torch.bfloat16,
    text_len=16,
    param_dtype=torch.bfloat16,
    num_train_timesteps=1000,
    sample_fps=16,
    sample_neg_prompt="blurry, static, low quality",
    frame_num=5,
    vae_stride=(4, 8, 8),
    patch_size=(1, 2, 2),
    sample_shift=5.0,
    sample_steps=4,
)
WAN_CONFIGS = {
    "t2v-tiny": dict(_COMMON, dim=64, ffn_dim=128, freq_dim=32, text_dim=4096, num_heads=2, num_layers=2),
    "t2v-1.3B": dict(_COMMON, text_len=512, dim=1536, ffn_dim=8960, freq_dim=256, text_dim=4096, num_heads=12,
                     num_layers=30, frame_num=81, sample_steps=50),
}
SIZE_CONFIGS = {"64*64": (64, 64), "128*128": (128, 128), "832*480": (832, 480), "480*832": (480, 832)}
'''

T5_PY = '''\
"""A stand-in for the umT5 text encoder: deterministic embeddings from the prompt's bytes."""
import hashlib

import torch
from torch import nn


class T5EncoderModel:
    def __init__(self, text_len, text_dim, dtype=torch.bfloat16, device=torch.device("cpu")):
        self.text_len = text_len
        self.dtype = dtype
        self.device = device
        self.model = nn.Sequential(nn.Embedding(256, text_dim), nn.Linear(text_dim, text_dim)).eval()
        self.model.requires_grad_(False)
        with torch.no_grad():
            for p in self.model.parameters():
                g = torch.Generator().manual_seed(7)
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        self.model.to(device)

    def __call__(self, texts, device):
        out = []
        for text in texts:
            ids = list(hashlib.sha256(text.encode()).digest())[: self.text_len]
            tokens = torch.tensor(ids, dtype=torch.long, device=self.device)
            out.append(self.model(tokens).to(device))
        return out
'''

VAE_PY = '''\
"""A stand-in for the Wan 2.1 VAE decoder: latent channels to RGB, upsampled by the VAE strides."""
import torch
from torch import nn


class Wan2_1_VAE:
    def __init__(self, z_dim=16, stride=(4, 8, 8), device="cpu"):
        self.stride = stride
        self.device = device
        torch.manual_seed(11)
        self.model = nn.Conv3d(z_dim, 3, kernel_size=1).eval().requires_grad_(False).to(device)

    def decode(self, zs):
        videos = []
        for z in zs:
            x = self.model(z[None].float())
            x = x.repeat_interleave(self.stride[1], dim=3).repeat_interleave(self.stride[2], dim=4)
            frames = 1 + (x.shape[2] - 1) * self.stride[0]
            x = torch.nn.functional.interpolate(x, size=(frames, x.shape[3], x.shape[4]), mode="nearest")
            videos.append(x[0].clamp(-1, 1))
        return videos
'''

UTILS_PY = (
    WANREPO_UTILS_PY
    + """
import numpy as np


def save_video(tensor, save_file=None, fps=16):
    frames = ((tensor[0].float().clamp(-1, 1) + 1) * 127.5).to("cpu").numpy().astype(np.uint8)
    np.save(save_file, frames)
    return save_file
"""
)  # the str2bool of the other fixture checkouts, and a save_video that writes frames as .npy

FAST_ATTENTION_PY = '''\
"""Attention: FlashAttention when installed, else PyTorch SDPA (the fused kernels)."""
import torch
import torch.nn.functional as F

try:
    import flash_attn

    FLASH_ATTN_2_AVAILABLE = True
except ModuleNotFoundError:
    FLASH_ATTN_2_AVAILABLE = False


def flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                    causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    out_dtype = q.dtype
    if q.device.type == "cuda" and q.dtype not in (torch.float16, torch.bfloat16):
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return x.transpose(1, 2).contiguous().to(out_dtype)
'''

SLOW_ATTENTION_PY = '''\
"""Attention with explicit padding masks (exact on ragged batches), in chunks to bound memory."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

CHUNKS = 32  # query chunks per call


def _mask(q_lens, k_lens, lq, lk, device):
    mask = torch.zeros(len(k_lens), 1, lq, lk, dtype=torch.bool, device=device)
    for b in range(len(k_lens)):
        mask[b, :, : int(q_lens[b].item()), : int(k_lens[b].item())] = True
    return mask


def flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                    causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    b, lq, lk = q.size(0), q.size(1), k.size(1)
    q_lens = torch.tensor([lq] * b, dtype=torch.int32, device=q.device) if q_lens is None else q_lens.to(q.device)
    k_lens = torch.tensor([lk] * b, dtype=torch.int32, device=q.device) if k_lens is None else k_lens.to(q.device)
    mask = _mask(q_lens, k_lens, lq, lk, q.device)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    outs = []
    with sdpa_kernel([SDPBackend.MATH]):
        chunk = max(1, -(-lq // CHUNKS))
        for start in range(0, lq, chunk):
            outs.append(F.scaled_dot_product_attention(q[:, :, start:start + chunk], k, v,
                                                       attn_mask=mask[:, :, start:start + chunk]))
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()
'''

T2V_PY = '''\
"""Text-to-video: the official flow (encode, denoise with CFG and the UniPC flow solver, decode)."""
import logging
import math

import torch
from torch import nn

from .modules.model import WanModel
from .modules.t5 import T5EncoderModel
from .modules.vae2_1 import Wan2_1_VAE
from .utils.fm_solvers_unipc import FlowUniPCMultistepScheduler


class WanT2V:
    def __init__(self, config, checkpoint_dir, device, t5_cpu=False, convert_model_dtype=False):
        self.config = config
        self.device = device
        self.param_dtype = config["param_dtype"]
        self.vae_stride = config["vae_stride"]
        self.patch_size = config["patch_size"]
        self.t5_cpu = t5_cpu
        self.text_encoder = T5EncoderModel(
            config["text_len"], config["text_dim"], dtype=config["t5_dtype"],
            device=torch.device("cpu") if t5_cpu else device)
        self.vae = Wan2_1_VAE(stride=self.vae_stride, device=device)
        logging.info(f"Creating WanModel from {checkpoint_dir}")
        self.model = WanModel.from_pretrained(checkpoint_dir)
        self.model.eval().requires_grad_(False)
@@LOAD@@
        self.sample_neg_prompt = config["sample_neg_prompt"]
        self.num_train_timesteps = config["num_train_timesteps"]

    def generate(self, input_prompt, size=(64, 64), frame_num=5, shift=5.0, sampling_steps=4, guide_scale=5.0,
                 seed=42, offload_model=True):
        f = (frame_num - 1) // self.vae_stride[0] + 1
        h, w = size[1] // self.vae_stride[1], size[0] // self.vae_stride[2]
        target_shape = (self.model.in_dim, f, h, w)
        seq_len = math.ceil(h * w / (self.patch_size[1] * self.patch_size[2]) * f)
        context = self.text_encoder([input_prompt], self.device)
        context_null = self.text_encoder([self.sample_neg_prompt], self.device)
        g = torch.Generator(device="cpu").manual_seed(seed)
        latents = [torch.randn(target_shape, generator=g).to(self.device)]
        if offload_model or next(self.model.parameters()).device != self.device:
            self.model.to(self.device)
        scheduler = FlowUniPCMultistepScheduler(num_train_timesteps=self.num_train_timesteps, shift=1,
                                                use_dynamic_shifting=False)
        scheduler.set_timesteps(sampling_steps, device=self.device, shift=shift)
        with torch.amp.autocast("cuda", dtype=self.param_dtype), torch.no_grad():
            for t in scheduler.timesteps:
                timestep = torch.stack([t]).to(self.device)
                cond = self.model(latents, t=timestep, context=context, seq_len=seq_len)[0]
                uncond = self.model(latents, t=timestep, context=context_null, seq_len=seq_len)[0]
                noise_pred = uncond + guide_scale * (cond - uncond)
                latents = [scheduler.step(noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0),
                                          return_dict=False, generator=g)[0].squeeze(0)]
        if offload_model:
            self.model.cpu()
        with torch.no_grad():
            videos = self.vae.decode(latents)
        return videos[0]
'''

FAST_LOAD = """\
        if convert_model_dtype:
            self.model.to(self.param_dtype)
        self.model.to(device)
"""
FP32_LOAD = """\
        self.model.to(torch.float32)  # keep full precision weights: bf16 drifted on long clips
        self.model.to(device)
"""
CPU_MODULE_LOAD = (
    FP32_LOAD
    + """\
        self.model.text_embedding = _OnCpu(self.model.text_embedding)  # saves VRAM on 8 GB cards
"""
)
ON_CPU_CLASS = '''

class _OnCpu(nn.Module):
    """Runs a small submodule on the CPU and hands the result back on the caller's device."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner.to("cpu")

    def forward(self, x):
        return self.inner(x.to("cpu", torch.float32)).to(x.device)
'''


@dataclass
class RunnableRepo:
    root: Path
    ckpt_dir: Path
    fast: str  # sha of the fast commit (also the branch ``fast``)
    docs: str  # a commit off the run's path
    slow_attention: str  # first bad commit
    fp32: str
    cpu_module: str  # tip of ``main``

    def args(self, *extra: str, steps: int = 3) -> list[str]:
        return ["--ckpt_dir", str(self.ckpt_dir), "--sample_steps", str(steps), *extra]

    def checkout_at(self, ref: str, dest: Path) -> Path:
        """A clone of the checkout at ``ref``, so tests never change the shared one."""
        sha = git(self.root, "rev-parse", "--verify", f"{ref}^{{commit}}")
        git(dest.parent, "clone", "-q", str(self.root), dest.name)
        git(dest, "checkout", "-q", "--detach", sha)
        return dest


def _t2v(load: str, extra: str = "") -> str:
    return T2V_PY.replace("@@LOAD@@\n", load) + extra


def _official_files(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as zf:
        return {
            "wan/modules/model.py": zf.read("wan/modules/model.py").decode(),
            "wan/utils/fm_solvers_unipc.py": zf.read("wan/utils/fm_solvers_unipc.py").decode(),
        }


# checkpoint shapes, matching the tasks of CONFIGS_PY (text_dim is fixed at 4096 by the official config)
TINY_MODEL = dict(dim=64, ffn_dim=128, freq_dim=32, text_len=16, num_heads=2, num_layers=2)
WAN_1_3B_MODEL = dict(dim=1536, ffn_dim=8960, freq_dim=256, text_len=512, num_heads=12, num_layers=30)


def save_checkpoint(model_file: Path, dest: Path, config: dict, dtype: str = "float32") -> Path:
    """A random ``WanModel`` saved as a diffusers checkpoint (config.json + safetensors), seeded."""
    import importlib.util
    import sys

    import torch

    name = "_runnable_wan_model_for_ckpt"
    if name not in sys.modules:
        pkg = model_file.parent
        spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    model_mod = __import__(f"{name}.model", fromlist=["WanModel"])
    torch.manual_seed(0)
    model = model_mod.WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, out_dim=16, **config)
    model.to(getattr(torch, dtype)).save_pretrained(dest, safe_serialization=True)
    return dest


def make_runnable_repo(wheel: Path, tmp: Path, model: dict | None = None, dtype: str = "float32") -> RunnableRepo:
    """Build the checkout, its history and its checkpoint (``TINY_MODEL`` unless told) under ``tmp``."""
    root = tmp / "Wan2.2"
    official = _official_files(wheel)
    files = {
        "generate.py": GENERATE_PY,
        "wan/__init__.py": "from .text2video import WanT2V\n",
        "wan/configs.py": CONFIGS_PY,
        "wan/text2video.py": _t2v(FAST_LOAD),
        "wan/modules/__init__.py": "",
        "wan/modules/attention.py": FAST_ATTENTION_PY,
        "wan/modules/t5.py": T5_PY,
        "wan/modules/vae2_1.py": VAE_PY,
        "wan/utils/__init__.py": "",
        "wan/utils/utils.py": UTILS_PY,
        ".gitignore": "*.npy\n__pycache__/\n",
        **official,
    }
    write_files(root, files)
    git(root, "init", "-q", "-b", "main")
    fast = commit_all(root, "Text-to-video with the UniPC flow solver")
    git(root, "branch", "fast")
    write_files(root, {"README.md": "# Wan2.2 fork\n\nRun `python generate.py --ckpt_dir CKPT`.\n"})
    docs = commit_all(root, "README: how to run")
    write_files(root, {"wan/modules/attention.py": SLOW_ATTENTION_PY})
    slow_attention = commit_all(root, "Attention: exact padding masks, chunked to bound memory")
    write_files(root, {"wan/text2video.py": _t2v(FP32_LOAD)})
    fp32 = commit_all(root, "Keep the DiT in fp32: bf16 drifted on long clips")
    write_files(root, {"wan/text2video.py": _t2v(CPU_MODULE_LOAD, ON_CPU_CLASS)})
    cpu_module = commit_all(root, "Keep the text embedding on the CPU to save VRAM")

    ckpt = tmp / ("Wan2.2-T2V-tiny" if model is None else "Wan2.2-T2V-1.3B-shaped")
    model_pkg = tmp / "_model_pkg"
    model_pkg.mkdir(exist_ok=True)
    (model_pkg / "__init__.py").write_text("")
    (model_pkg / "model.py").write_text(official["wan/modules/model.py"], encoding="utf-8")
    (model_pkg / "attention.py").write_text(FAST_ATTENTION_PY, encoding="utf-8")
    save_checkpoint(model_pkg / "model.py", ckpt, model or TINY_MODEL, dtype)
    return RunnableRepo(root, ckpt, fast, docs, slow_attention, fp32, cpu_module)
