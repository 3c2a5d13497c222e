"""The built-in pipeline: end to end on the CPU with the tiny preset, its contract with the hooks, its config
checks, the regression switches, and atomic output. One GPU test runs the small preset with each switch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import imageio.v2 as iio2
import imageio.v3 as iio3
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.utils._python_dispatch import TorchDispatchMode

from wanrun.hooks import NullHooks, RunHooks
from wanrun.pipeline import PRESETS, PipelineConfig, model_summary, run_pipeline
from wanrun.pipeline import video as video_module
from wanrun.pipeline.decoder import ToyVideoDecoder
from wanrun.pipeline.model import WanStyleDiT
from wanrun.pipeline.regressions import block_placement
from wanrun.pipeline.sampler import FlowMatchSampler, shifted_sigmas
from wanrun.pipeline.video import VideoWriteError

aten = torch.ops.aten
TINY: dict[str, Any] = {"preset": "tiny", "size": "64x64", "frames": 5, "steps": 2}


class Recorder:
    """Hooks that log every call, and every denoiser forward, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.events.append(("phase", name))
        yield
        self.events.append(("/phase", name))

    @contextmanager
    def step(self, index: int) -> Iterator[None]:
        self.events.append(("step", index))
        yield
        self.events.append(("/step", index))

    def attach_model(self, model: torch.nn.Module, name: str) -> None:
        self.events.append(("attach", name))

        def record(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            assert torch.isfinite(output).all()
            self.events.append(("forward",))

        model.register_forward_hook(record)

    def progress(self, index: int, total: int) -> None:
        self.events.append(("progress", index, total))

    def forwards(self) -> int:
        return self.events.count(("forward",))


def tiny(tmp_path: Path, name: str = "clip.npy", **overrides: Any) -> PipelineConfig:
    return PipelineConfig(**{**TINY, "out": tmp_path / name, **overrides})


def test_end_to_end_mp4_and_gif(tmp_path: Path) -> None:
    for name in ("clip.mp4", "clip.gif"):
        result = run_pipeline(tiny(tmp_path, name))
        assert result.out == tmp_path / name
        assert result.out.stat().st_size > 0
        assert result.frames_shape == (5, 64, 64, 3)
    assert len(iio2.mimread(tmp_path / "clip.mp4", format="FFMPEG")) == 5
    gif = iio3.imread(tmp_path / "clip.gif", plugin="pillow", index=None)
    assert gif.shape[:3] == (5, 64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.mp4"]


def test_same_seed_same_frames_other_seed_other_frames(tmp_path: Path) -> None:
    a = np.load(run_pipeline(tiny(tmp_path, "a.npy", seed=3)).out)  # type: ignore[arg-type]
    b = np.load(run_pipeline(tiny(tmp_path, "b.npy", seed=3)).out)  # type: ignore[arg-type]
    c = np.load(run_pipeline(tiny(tmp_path, "c.npy", seed=4)).out)  # type: ignore[arg-type]
    assert a.shape == (5, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5
    assert a.std() > 10  # an image, not a flat colour


def test_hooks_called_in_order(tmp_path: Path) -> None:
    rec = Recorder()
    assert isinstance(rec, RunHooks) and isinstance(NullHooks(), RunHooks)
    run_pipeline(tiny(tmp_path), rec)
    steps: list[tuple[Any, ...]] = []
    for i in range(2):
        steps += [("step", i), ("forward",), ("forward",), ("/step", i), ("progress", i + 1, 2)]
    assert rec.events == [
        ("phase", "load"),
        ("/phase", "load"),
        ("attach", "dit"),
        ("phase", "encode"),
        ("/phase", "encode"),
        ("phase", "denoise"),
        *steps,
        ("/phase", "denoise"),
        ("phase", "decode"),
        ("/phase", "decode"),
        ("phase", "save"),
        ("/phase", "save"),
    ]


def test_no_output_skips_save(tmp_path: Path) -> None:
    rec = Recorder()
    result = run_pipeline(tiny(tmp_path, out=None, frames=1), rec)
    assert result.out is None and result.frames_shape == (1, 64, 64, 3)
    assert ("phase", "save") not in rec.events
    assert list(tmp_path.iterdir()) == []


def test_guide_scale_one_halves_the_forwards(tmp_path: Path) -> None:
    counts = {}
    for scale in (5.0, 1.0):
        rec = Recorder()
        result = run_pipeline(tiny(tmp_path, steps=3, guide_scale=scale), rec)
        counts[scale] = rec.forwards()
        assert result.info["forwards_per_step"] * 3 == counts[scale]
    assert counts == {5.0: 6, 1.0: 3}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "72x64"),
        ("size", "64x40"),
        ("size", "sixty-four"),
        ("frames", 6),
        ("frames", 0),
        ("steps", 0),
        ("preset", "wan-14b"),
        ("cpu_block", 2),  # tiny has blocks 0 and 1
        ("cpu_block", -1),
        ("weights_dtype", "fp16"),  # fp16 weights under bf16 compute
        ("out", "clip.avi"),
        ("device", "gpu"),
        ("guide_scale", 0.5),
        ("fps", 0),
    ],
)
def test_bad_config_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        PipelineConfig(**{**TINY, field: value})
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_config_parsing_and_preset_defaults() -> None:
    assert PipelineConfig(size="832x480").size == (832, 480)
    assert PipelineConfig(size="832*480").size == (832, 480)
    with pytest.raises(ValidationError):
        PipelineConfig(unknown=1)  # type: ignore[call-arg]
    big = PipelineConfig(preset="wan-1.3b")
    assert (big.size, big.frames) == ((832, 480), 81)
    assert PipelineConfig(preset="wan-1.3b", frames=5).size == (832, 480)
    summary = model_summary(big)
    assert summary["latent_shape"] == [16, 21, 60, 104]
    assert summary["tokens"] == 32_760
    assert 1.3e9 < summary["params"] < 1.5e9
    assert summary["forwards"] == 16


def test_dtype_resolution() -> None:
    assert PipelineConfig().resolved_dtypes("cpu") == ("fp32", "fp32")
    assert PipelineConfig(weights_dtype="fp32").resolved_dtypes("cpu") == ("bf16", "fp32")  # the switch's autocast
    assert PipelineConfig(weights_dtype="fp32", dtype="fp32").resolved_dtypes("cpu") == ("fp32", "fp32")
    assert PipelineConfig().resolved_dtypes("cuda") == ("bf16", "bf16")
    assert PipelineConfig(dtype="bf16").resolved_dtypes("cpu") == ("bf16", "bf16")
    assert PipelineConfig(weights_dtype="fp32").resolved_dtypes("cuda") == ("bf16", "fp32")
    assert PipelineConfig(weights_dtype="bf16").resolved_dtypes("cpu") == ("bf16", "bf16")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_summary_counts_the_model_it_describes(preset: str) -> None:
    with torch.device("meta"):
        dit = WanStyleDiT(PRESETS[preset])
    params = list(dit.named_parameters())
    summary = model_summary(PipelineConfig(preset=preset, dtype="bf16"))
    assert summary["params"] == sum(p.numel() for _, p in params)
    expected = sum(p.numel() * (4 if WanStyleDiT.keeps_fp32(n) else 2) for n, p in params)
    assert summary["weight_bytes"] == expected


def test_built_model_dtypes_and_names(tmp_path: Path) -> None:
    dit = run_pipeline(tiny(tmp_path, dtype="bf16")).denoiser
    names = dict(dit.named_parameters())
    for name in ("patch_embedding.weight", "blocks.1.self_attn.q.weight", "blocks.0.ffn.2.weight", "head.head.weight"):
        assert names[name].dtype == torch.bfloat16, name
    for name in ("time_embedding.0.weight", "time_projection.1.weight", "blocks.0.modulation", "head.modulation"):
        assert names[name].dtype == torch.float32, name
    assert not any(p.requires_grad for p in dit.parameters())
    assert not dit.training


class WeightCasts(TorchDispatchMode):
    """Counts casts of weight-shaped (2-D and larger) fp32 tensors to a lower precision: re-cast weights."""

    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes = shapes
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is aten._to_copy.default:
            src, dtype = args[0], kwargs.get("dtype")
            if (
                src.dtype == torch.float32
                and dtype in (torch.bfloat16, torch.float16)
                and tuple(src.shape) in self.shapes
            ):
                self.count += 1
        return func(*args, **kwargs)


def test_fp32_weights_are_recast_every_forward_under_autocast(tmp_path: Path) -> None:
    casts = {}
    for weights in ("fp32", None):
        cfg = tiny(tmp_path, dtype="bf16", weights_dtype=weights, steps=2)
        dit = run_pipeline(cfg).denoiser
        shapes = {tuple(p.shape) for n, p in dit.named_parameters() if p.ndim >= 2 and not WanStyleDiT.keeps_fp32(n)}
        mode = WeightCasts(shapes)
        x = torch.randn(1, 16, 2, 8, 8)
        context = torch.randn(1, 16, 64)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), mode:
            dit(x, torch.full((1,), 500.0), context)
            first = mode.count
            dit(x, torch.full((1,), 400.0), context)
        casts[weights] = (first, mode.count)
        if weights == "fp32":
            assert all(p.dtype == torch.float32 for p in dit.parameters())
    first, total = casts["fp32"]
    assert first >= 2 * 8 + 3  # every block's eight attention projections and its FFN, at least
    assert total == 2 * first  # no cache: the second forward casts them all again
    assert casts[None] == (0, 0)


def test_block_placement() -> None:
    cfg = PipelineConfig(preset="small", cpu_block=3)
    assert block_placement(cfg, "cuda") == ["device"] * 3 + ["cpu"] + ["device"] * 4
    both = PipelineConfig(preset="small", cpu_block=0, offload=True)
    assert block_placement(both, torch.device("cuda:0")) == ["cpu"] + ["offload"] * 7
    assert block_placement(both, "cpu") == ["device"] * 8


def test_placement_switches_refuse_a_cpu_run_at_once(tmp_path: Path) -> None:
    """Copies and residency do not exist on a CPU: the switches say so instead of running a silent demo."""
    for switches, named in (({"offload": True}, "--offload shows"), ({"cpu_block": 1}, "--cpu-block shows"),
                            ({"host_copy": True, "offload": True}, "--offload and --host-copy show")):  # fmt: skip
        with pytest.raises(ValueError, match=f"^{named} only on a GPU"):
            run_pipeline(tiny(tmp_path, "switched.npy", **switches))
        assert not (tmp_path / "switched.npy").exists()
    PipelineConfig(offload=True, cpu_block=1, host_copy=True).check_device("cuda")  # the GPU twin: accepted
    assert run_pipeline(tiny(tmp_path, "clean.npy")).info["regressions"] == {}


def test_decoder_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(ToyVideoDecoder, "forward", broken)
    rec = Recorder()
    with pytest.raises(RuntimeError, match="decoder exploded"):
        run_pipeline(tiny(tmp_path, "clip.mp4"), rec)
    assert list(tmp_path.iterdir()) == []
    assert rec.events[-1] == ("phase", "decode")  # the error went through the hooks, nothing after it ran


def test_writer_failure_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_save(f: Any, frames: np.ndarray) -> None:
        f.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(video_module.np, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        run_pipeline(tiny(tmp_path, "clip.npy"))
    assert list(tmp_path.iterdir()) == []


def test_missing_ffmpeg_fails_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imageio_ffmpeg

    def missing() -> str:
        raise RuntimeError("No ffmpeg exe could be found.")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    rec = Recorder()
    with pytest.raises(VideoWriteError, match=r"ffmpeg.*\.gif"):
        run_pipeline(tiny(tmp_path, "clip.mp4"), rec)
    assert rec.events == []
    run_pipeline(tiny(tmp_path, "clip.gif"))  # the suggested way out works without ffmpeg
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif"]


def test_sigmas_and_second_order_update() -> None:
    assert shifted_sigmas(4, 1.0) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    sigmas = shifted_sigmas(10, 5.0)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert all(a > b for a, b in pairwise(sigmas))
    assert sigmas[5] == pytest.approx(5 * 0.5 / (1 + 4 * 0.5))  # shift spends the steps at the noisy end
    sampler = FlowMatchSampler(10, 5.0, torch.device("cpu"))
    assert sampler.timesteps.tolist() == pytest.approx([s * 1000 for s in sigmas[:-1]], rel=1e-6)
    # dx/dsigma = sigma integrates from sigma 1 to 0 to x - 1/2; the multistep update gets much closer than Euler
    errors = {}
    for order in (1, 2):
        sampler = FlowMatchSampler(10, 5.0, torch.device("cpu"), order=order)
        x = torch.zeros(1, dtype=torch.float64)
        for i in range(10):
            x = sampler.step(i, x, torch.full((1,), sigmas[i], dtype=torch.float64))
        errors[order] = abs(x.item() + 0.5)
    assert errors[2] < errors[1] / 3


def test_import_wanrun_does_not_import_torch() -> None:
    code = "import sys, wanrun, wanrun.pipeline, wanrun.hooks; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import inspect; from wanrun import guard; assert not inspect.ismodule(guard), guard"
    subprocess.run([sys.executable, "-c", code], check=True)


class CrossDeviceCopies(TorchDispatchMode):
    """Counts copies between host and device."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (aten._to_copy.default, aten.copy_.default):
            src = args[1] if func is aten.copy_.default else args[0]
            if src.device.type != out.device.type:
                self.count += 1
        return out


class CopyRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    @contextmanager
    def step(self, index: int) -> Iterator[None]:
        mode = CrossDeviceCopies()
        with mode:
            yield
        self.copies += mode.count


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "switch", [{}, {"offload": True}, {"weights_dtype": "fp32"}, {"cpu_block": 3}, {"host_copy": True}], ids=str
)
def test_small_preset_on_cuda(switch: dict[str, Any], tmp_path: Path) -> None:
    rec = CopyRecorder()
    cfg = PipelineConfig(preset="small", steps=2, device="cuda", out=tmp_path / "clip.npy", **switch)
    result = run_pipeline(cfg, rec)
    assert result.frames_shape == (17, 192, 320, 3)
    assert rec.forwards() == 4
    params = dict(result.denoiser.named_parameters())
    on_cpu = {n.split(".")[1] for n, p in params.items() if p.device.type == "cpu" and n.startswith("blocks.")}
    assert all(p.device.type == "cuda" for n, p in params.items() if not n.startswith("blocks."))
    expect_dtype = torch.float32 if switch.get("weights_dtype") == "fp32" else torch.bfloat16
    assert params["blocks.0.ffn.0.weight"].dtype == expect_dtype
    if switch.get("offload"):
        assert on_cpu == {str(i) for i in range(8)}  # the weights live on the CPU between uses
    elif "cpu_block" in switch:
        assert on_cpu == {"3"}
    else:
        assert on_cpu == set()
    if switch in ({}, {"weights_dtype": "fp32"}):
        assert rec.copies == 0  # a clean loop moves nothing between host and device
    else:
        assert rec.copies >= 2 * cfg.steps
    assert set(result.info["regressions"]) == set(switch)
