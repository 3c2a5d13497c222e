"""The memory estimate: task table, checkpoint facts, and the args that move weights on and off the GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from wandoc.estimate import FAMILIES, GB, T5_BYTES, estimate, parse_size, tokens_for
from wandoc.facts import CheckpointFacts, CheckpointModel, RepoFacts
from wandoc.probes.checkpoints import probe_checkpoints


def repo(**effective: Any) -> RepoFacts:
    return RepoFacts(effective=effective)


A14B_720P = {"task": "t2v-A14B", "size": "1280*720", "frame_num": 81}


def test_token_counts_match_wan_shapes() -> None:
    assert tokens_for(832, 480, 81, 8) == 32_760  # 21 x 60 x 104 latent, (1, 2, 2) patch
    assert tokens_for(1280, 720, 81, 8) == 75_600
    assert tokens_for(1280, 704, 121, 16) == 31 * 22 * 40  # the 5B's 16x VAE
    assert tokens_for(832, 480, 1, 8) == 30 * 52


def test_parse_size() -> None:
    assert parse_size("1280*720") == (1280, 720)
    assert parse_size(" 832x480 ") == (832, 480)
    assert parse_size("big") is None and parse_size(None) is None


def test_a14b_without_convert_is_fp32_and_two_experts() -> None:
    est = estimate(repo(**A14B_720P, offload_model=True), CheckpointFacts())
    assert est.known and est.task == "t2v-A14B" and est.dit_experts == 2
    assert est.dit_runtime_dtype == "F32"
    assert 55 * GB < est.dit_bytes < 59 * GB  # the published ~57 GB per fp32 expert
    assert est.t5_bytes == T5_BYTES and 10 * GB < est.t5_bytes < 12 * GB
    assert est.peak_vram_no_offload == 2 * est.dit_bytes + est.t5_bytes + est.vae_bytes + est.activations_bytes
    assert est.peak_vram_offload == est.dit_bytes + est.activations_bytes + est.vae_bytes
    assert est.offloaded_bytes == 2 * est.dit_bytes + est.t5_bytes
    assert "task table" in est.note


def test_convert_model_dtype_halves_the_dit() -> None:
    fp32 = estimate(repo(**A14B_720P), CheckpointFacts())
    for flag in (True, "True", "1"):
        bf16 = estimate(repo(**A14B_720P, convert_model_dtype=flag), CheckpointFacts())
        assert bf16.dit_runtime_dtype == "BF16" and bf16.dit_bytes * 2 == fp32.dit_bytes
        assert bf16.peak_vram_no_offload == fp32.peak_vram_no_offload - 2 * bf16.dit_bytes
    off = estimate(repo(**A14B_720P, convert_model_dtype="False"), CheckpointFacts())
    assert off.dit_runtime_dtype == "F32"


def test_t5_cpu_keeps_t5_off_the_gpu() -> None:
    gpu = estimate(repo(**A14B_720P), CheckpointFacts())
    cpu = estimate(repo(**A14B_720P, t5_cpu=True), CheckpointFacts())
    assert cpu.peak_vram_no_offload == gpu.peak_vram_no_offload - gpu.t5_bytes
    assert cpu.offloaded_bytes == gpu.offloaded_bytes  # T5 sits in RAM either way


def test_text_encoding_can_be_the_offload_peak() -> None:
    """A bf16 1.3B at a small size: T5 during encoding outweighs the denoising phase."""
    est = estimate(repo(task="t2v-1.3B", size="480*272", frame_num=17, convert_model_dtype=True), CheckpointFacts())
    assert est.peak_vram_offload == est.t5_bytes + est.vae_bytes
    assert est.dit_bytes + est.activations_bytes < est.t5_bytes


def test_activations_grow_with_frames_and_size() -> None:
    small = estimate(repo(task="t2v-1.3B", size="832*480", frame_num=33), CheckpointFacts())
    more_frames = estimate(repo(task="t2v-1.3B", size="832*480", frame_num=81), CheckpointFacts())
    bigger = estimate(repo(task="t2v-1.3B", size="1280*720", frame_num=81), CheckpointFacts())
    assert 0 < small.activations_bytes < more_frames.activations_bytes < bigger.activations_bytes
    assert 1 * GB < more_frames.activations_bytes < 5 * GB  # 32,760 tokens on a 1.3B: a few GB, not tens


@pytest.mark.parametrize(
    ("task", "experts", "billions"),
    [
        ("t2v-A14B", 2, 14.3),
        ("i2v-A14B", 2, 14.3),
        ("ti2v-5B", 1, 5.0),
        ("t2v-1.3B", 1, 1.4),
        ("t2v-14B", 1, 14.3),
        ("s2v-14B", 1, 14.3),
        ("animate-14B", 1, 14.3),
        ("flf2v-14B", 1, 14.3),
        ("vace-1.3B", 1, 1.4),
    ],
)
def test_task_table(task: str, experts: int, billions: float) -> None:
    est = estimate(repo(task=task), CheckpointFacts())
    assert est.known and est.dit_experts == experts
    assert abs(est.dit_params / 1e9 - billions) < 0.1
    assert est.activations_bytes > 0  # the family's default size and frames stand in for missing args


def test_the_5b_uses_its_16x_vae() -> None:
    five = estimate(repo(task="ti2v-5B", size="1280*704", frame_num=121), CheckpointFacts())
    family = FAMILIES["5B"]
    tokens = tokens_for(1280, 704, 121, 16)
    assert five.activations_bytes == tokens * (24 * family.dim + 4 * family.ffn_dim)


def test_checkpoint_facts_win_over_the_table() -> None:
    ckpt = CheckpointFacts(
        found=True,
        dit_params=1_418_000_000,
        dit_experts=1,
        dit_main_dtype="BF16",
        dit_bytes_on_disk=2_840_000_000,
        models=[
            CheckpointModel(folder="x.pth", role="t5", bytes=11_360_000_000),
            CheckpointModel(folder="Wan2.1_VAE.pth", role="vae", bytes=508_000_000),
        ],
    )
    est = estimate(repo(task="t2v-1.3B"), ckpt)
    assert est.dit_params == 1_418_000_000 and est.dit_runtime_dtype == "BF16"
    assert est.dit_bytes == 2_840_000_000
    assert (est.t5_bytes, est.vae_bytes) == (11_360_000_000, 508_000_000)
    assert "checkpoint headers" in est.note


def test_fp8_checkpoint_keeps_its_bytes_and_convert_widens_it() -> None:
    ckpt = CheckpointFacts(
        dit_params=14_000_000_000, dit_experts=1, dit_main_dtype="F8_E4M3", dit_bytes_on_disk=14 * GB
    )
    kept = estimate(repo(task="t2v-14B"), ckpt)
    widened = estimate(repo(task="t2v-14B", convert_model_dtype=True), ckpt)
    assert kept.dit_runtime_dtype == "F8_E4M3" and kept.dit_bytes == 14 * GB
    assert widened.dit_runtime_dtype == "BF16" and widened.dit_bytes == 28 * GB


def test_unknown_task_without_checkpoints_is_not_known() -> None:
    for eff in ({"task": "t2v-900B"}, {}):
        est = estimate(RepoFacts(effective=eff), CheckpointFacts())
        assert not est.known and est.peak_vram_no_offload == 0 and est.note


def test_unknown_task_sized_from_checkpoint() -> None:
    ckpt = CheckpointFacts(dit_params=5_000_000_000, dit_experts=1, dit_main_dtype="F32", dit_bytes_on_disk=20 * GB)
    est = estimate(repo(), ckpt)
    assert est.known and "5B" in est.note and est.dit_bytes == 20 * GB


def test_bad_size_and_frames_fall_back() -> None:
    est = estimate(repo(task="t2v-1.3B", size="huge", frame_num="many"), CheckpointFacts())
    default = estimate(repo(task="t2v-1.3B"), CheckpointFacts())
    assert est.activations_bytes == default.activations_bytes
    assert "size" in est.note and "frame_num" in est.note


def test_with_probed_a14b_checkpoints(tmp_path: Path) -> None:
    for expert in ("high_noise_model", "low_noise_model"):
        (tmp_path / expert).mkdir()
        weights = {"blocks.0.w": np.ones((64, 64), dtype=np.float32)}
        save_file(weights, str(tmp_path / expert / "diffusion_pytorch_model-00001-of-00001.safetensors"))
    ckpt = probe_checkpoints(tmp_path)
    est = estimate(repo(**A14B_720P), ckpt)
    assert est.dit_experts == 2 and est.dit_params == 64 * 64 and est.dit_runtime_dtype == "F32"
    assert est.dit_bytes == ckpt.dit_bytes_on_disk
