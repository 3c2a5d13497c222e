"""What a built-in run is asked to do: the validated config, the model presets and the shape arithmetic.

Torch-free on purpose: the CLI parses and checks a config (and prints its shapes) before anything heavy is
imported, and a bad value fails with a pydantic ValidationError that names the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

DtypeName = Literal["bf16", "fp16", "fp32"]
PresetName = Literal["tiny", "demo", "small", "wan-1.3b"]

LATENT_CHANNELS = 16
VAE_STRIDE = (4, 8, 8)  # (time, height, width) compression of the latent, as in Wan's VAE
PATCH = (1, 2, 2)  # (time, height, width) patch of the DiT's patch embedding
FREQ_DIM = 256  # width of the sinusoidal time embedding
DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4}
OUTPUT_SUFFIXES = (".mp4", ".gif", ".npy")


@dataclass(frozen=True)
class PresetSpec:
    """Shape of one built-in model, plus the size and length a run gets when it names none."""

    dim: int
    num_blocks: int
    num_heads: int
    ffn_dim: int
    text_dim: int
    text_len: int
    default_size: tuple[int, int]  # (width, height)
    default_frames: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


PRESETS: dict[str, PresetSpec] = {
    "tiny": PresetSpec(64, 2, 2, 128, 64, 16, (64, 64), 5),
    # small's weights (36M parameters, 138 MiB in fp32) at tiny's shape: past every runtime rule's byte floor,
    # seconds a step on a CPU, so the fp32-weights regression shows on the machine the README sets up
    "demo": PresetSpec(512, 8, 8, 2048, 512, 64, (64, 64), 5),
    "small": PresetSpec(512, 8, 8, 2048, 512, 64, (320, 192), 17),
    "wan-1.3b": PresetSpec(1536, 30, 12, 8960, 4096, 512, (832, 480), 81),
}

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[x*X]\s*(\d+)\s*$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class PipelineConfig(BaseModel):
    """One generation with the built-in Wan-style pipeline; regression switches reproduce known slow setups."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = "a red fox running through snow"
    negative_prompt: str = ""
    preset: PresetName = "demo"
    steps: int = Field(8, ge=1, le=1000)
    size: tuple[int, int] = Field(PRESETS["demo"].default_size, description="(width, height); '832x480' is accepted")
    frames: int = Field(PRESETS["demo"].default_frames, ge=1, le=1025, description="4k+1, as Wan requires")
    seed: int = Field(0, ge=0, lt=2**63)
    device: str = "auto"
    guide_scale: float = Field(5.0, ge=1.0, le=50.0)
    shift: float = Field(5.0, gt=0.0, le=100.0)
    dtype: DtypeName = "bf16"
    weights_dtype: DtypeName | None = None
    offload: bool = False
    cpu_block: int | None = Field(None, ge=0)
    host_copy: bool = False
    out: Path | None = Path("wanrun_out.mp4")
    fps: int = Field(16, ge=1, le=240)

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        """A preset brings its own size and length (wan-1.3b: 832x480, 81 frames) unless the caller gives them."""
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            spec = PRESETS[data["preset"]]
            data = {"size": spec.default_size, "frames": spec.default_frames, **data}
        return data

    @field_validator("size", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _SIZE_RE.match(value)
            if match is None:
                raise ValueError(f"size must look like 832x480 (width x height), got {value!r}")
            return int(match.group(1)), int(match.group(2))
        return value

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        stride = VAE_STRIDE[1] * PATCH[1]
        for name, n in zip(("width", "height"), value, strict=True):
            if n < stride or n > 4096 or n % stride:
                raise ValueError(
                    f"{name} {n} must be a multiple of {stride} between {stride} and 4096 "
                    f"(the latent is 1/{VAE_STRIDE[1]} of it and the DiT patches it by {PATCH[1]})"
                )
        return value

    @field_validator("frames")
    @classmethod
    def _check_frames(cls, value: int) -> int:
        if (value - 1) % VAE_STRIDE[0]:
            lower = value - (value - 1) % VAE_STRIDE[0]
            raise ValueError(f"frames must be 4k+1 (1, 5, 9, ..., 81), got {value}; try {lower} or {lower + 4}")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("weights_dtype")
    @classmethod
    def _check_weights_dtype(cls, value: DtypeName | None, info: ValidationInfo) -> DtypeName | None:
        compute = info.data.get("dtype")
        if value is not None and compute is not None and value not in (compute, "fp32"):
            raise ValueError(
                f"weights_dtype {value} with dtype {compute} is not supported: use the same dtype, "
                "or fp32 weights (which autocast re-casts every forward)"
            )
        return value

    @field_validator("cpu_block")
    @classmethod
    def _check_cpu_block(cls, value: int | None, info: ValidationInfo) -> int | None:
        preset = info.data.get("preset")
        if value is not None and preset in PRESETS and value >= PRESETS[preset].num_blocks:
            raise ValueError(
                f"cpu_block {value} is out of range: preset {preset} has blocks 0..{PRESETS[preset].num_blocks - 1}"
            )
        return value

    @field_validator("out")
    @classmethod
    def _check_out(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ValueError(f"out must end in {', '.join(OUTPUT_SUFFIXES)}, got {value.name!r}")
        return value

    @property
    def spec(self) -> PresetSpec:
        return PRESETS[self.preset]

    def resolved_device(self) -> str:
        """ "auto" becomes "cuda" where torch sees a GPU, else "cpu"; torch is imported only here."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtypes(self, device_type: str) -> tuple[DtypeName, DtypeName]:
        """(compute, weights) dtypes. On the CPU, compute is fp32 unless the caller chose a dtype (or the weights'),
        except under fp32 weights: that switch is about autocast re-casting them, so it keeps bf16 autocast."""
        compute: DtypeName = self.dtype
        if device_type == "cpu" and "dtype" not in self.model_fields_set:
            compute = self.weights_dtype if self.weights_dtype in ("bf16", "fp16") else "fp32"
            if self.weights_dtype == "fp32":
                compute = "bf16"
        return compute, self.weights_dtype or compute

    def placement_switches(self) -> list[str]:
        """The switches that move tensors between host and device (as their CLI flags): none exist on a CPU."""
        on = {"--offload": self.offload, "--cpu-block": self.cpu_block is not None, "--host-copy": self.host_copy}
        return [flag for flag, set_ in on.items() if set_]

    def check_device(self, device_type: str) -> None:
        """ValueError (one line) when a switch cannot show on this device: copies and residency need a GPU."""
        switches = self.placement_switches()
        if device_type == "cpu" and switches:
            raise ValueError(
                f"{' and '.join(switches)} {'shows' if len(switches) == 1 else 'show'} only on a GPU: on a CPU run "
                "nothing crosses between host and device. "
                "On this machine try --preset demo --weights-dtype fp32 (weights re-cast every step)"
            )


def latent_shape(size: tuple[int, int], frames: int) -> tuple[int, int, int, int]:
    """(channels, frames, height, width) of the latent for a (width, height) video of `frames` frames."""
    width, height = size
    return LATENT_CHANNELS, (frames - 1) // VAE_STRIDE[0] + 1, height // VAE_STRIDE[1], width // VAE_STRIDE[2]


def token_grid(size: tuple[int, int], frames: int) -> tuple[int, int, int]:
    """(frames, height, width) of the DiT's token grid after the patch embedding."""
    _, f, h, w = latent_shape(size, frames)
    return f // PATCH[0], h // PATCH[1], w // PATCH[2]


def dit_param_counts(spec: PresetSpec) -> tuple[int, int]:
    """(total, kept in fp32) parameter counts of the DiT, from its shape alone; tests hold the model to it."""
    d, patch_vol = spec.dim, PATCH[0] * PATCH[1] * PATCH[2]

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    fp32_time = linear(FREQ_DIM, d) + linear(d, d) + linear(d, 6 * d)
    per_block_fp32 = 6 * d + 2 * d + 4 * d  # modulation, norm3 (affine), q/k RMSNorm of both attentions
    per_block = 8 * linear(d, d) + linear(d, spec.ffn_dim) + linear(spec.ffn_dim, d) + per_block_fp32
    head_fp32 = 2 * d
    total = (
        LATENT_CHANNELS * patch_vol * d
        + d  # patch_embedding
        + linear(spec.text_dim, d)
        + linear(d, d)  # text_embedding
        + fp32_time
        + spec.num_blocks * per_block
        + head_fp32
        + linear(d, LATENT_CHANNELS * patch_vol)
    )
    return total, fp32_time + spec.num_blocks * per_block_fp32 + head_fp32


def forward_flops(spec: PresetSpec, tokens: int) -> int:
    """Floating-point operations of one DiT forward, from its shape: the matmuls (2 per multiply-add) of every
    block's self-attention (q, k, v, o and the L x L scores), cross-attention to the text and FFN, plus the patch
    embedding and head. Norms, RoPE and modulation are a few percent and left out: an estimate, not a count."""
    d, f, t, n = spec.dim, spec.ffn_dim, spec.text_len, tokens
    patch_vol = PATCH[0] * PATCH[1] * PATCH[2]
    self_attn = 4 * 2 * n * d * d + 2 * 2 * n * n * d
    cross_attn = 2 * 2 * n * d * d + 2 * 2 * t * d * d + 2 * 2 * n * t * d
    ffn = 2 * 2 * n * d * f
    text = 2 * t * (spec.text_dim * d + d * d)
    ends = 2 * 2 * n * d * LATENT_CHANNELS * patch_vol
    return spec.num_blocks * (self_attn + cross_attn + ffn) + text + ends


def model_summary(cfg: PipelineConfig) -> dict[str, Any]:
    """Shape numbers of a run without building anything: tokens, latent grid, DiT parameters and weight bytes.

    Weight bytes are for the configured dtypes as a GPU run holds them; on the CPU an unset dtype means fp32.
    """
    spec = cfg.spec
    grid = token_grid(cfg.size, cfg.frames)
    params, fp32_params = dit_param_counts(spec)
    weights = cfg.weights_dtype or cfg.dtype
    forwards_per_step = 1 if cfg.guide_scale == 1.0 else 2
    return {
        "preset": cfg.preset,
        "dim": spec.dim,
        "blocks": spec.num_blocks,
        "heads": spec.num_heads,
        "ffn_dim": spec.ffn_dim,
        "text_len": spec.text_len,
        "text_dim": spec.text_dim,
        "size": list(cfg.size),
        "frames": cfg.frames,
        "latent_shape": list(latent_shape(cfg.size, cfg.frames)),
        "token_grid": list(grid),
        "tokens": grid[0] * grid[1] * grid[2],
        "params": params,
        "weight_bytes": (params - fp32_params) * DTYPE_BYTES[weights] + fp32_params * 4,
        "steps": cfg.steps,
        "forwards_per_step": forwards_per_step,
        "forwards": cfg.steps * forwards_per_step,
        "flops_per_step": forward_flops(spec, grid[0] * grid[1] * grid[2]) * forwards_per_step,
    }
