"""What the guards measure: per-step metrics, phases and run info, and the run report.

These models are torch-free on purpose: runtime rules (``scope = "step"`` or ``"run"``) read them, and
``wandoc rules test`` checks those rules on a machine without torch. wanrun fills them; nothing here
measures anything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wandoc.engine import Finding

REPORT_SCHEMA = "wanrun.report/1"


class _M(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModuleVolume(_M):
    """Bytes or ops attributed to one module (dotted path, e.g. ``blocks.7.ffn.0``)."""

    module: str
    bytes: int = 0
    count: int = 0


class StepMetrics(_M):
    index: int = 0
    seconds: float = 0.0
    forwards: int = 0  # denoiser forwards in this step (2 with classifier-free guidance)
    h2d_bytes: int = 0
    d2h_bytes: int = 0
    copies: int = 0  # host<->device copies, both directions
    h2d_copies: int = 0
    d2h_copies: int = 0
    pageable_copy_bytes: int = 0  # host side not pinned
    blocking_copies: int = 0
    weight_h2d_bytes: int = 0  # H2D copies of module parameters/buffers (offload traffic)
    cast_bytes: int = 0  # all dtype casts (output bytes)
    cast_count: int = 0
    repeated_cast_bytes: int = 0  # casts of a tensor already cast in an earlier step (weights)
    repeated_casts: int = 0
    activation_cast_bytes: int = 0  # casts of fresh tensors
    cpu_ops: int = 0  # heavy ops (matmul, conv, attention) run on CPU tensors while a GPU is expected
    cpu_flops: float = 0.0
    cpu_resident: list[str] = Field(default_factory=list)  # modules with parameters on the CPU at step time
    cpu_resident_bytes: int = 0
    syncs: int = 0  # .item(), .cpu(), nonzero and friends
    vram_peak_bytes: int = 0  # torch allocator peak in this step
    vram_used_bytes: int = 0  # NVML, this process
    vram_total_bytes: int = 0
    gpu_util: float | None = None  # mean NVML utilisation over the step, percent
    power_w: float | None = None
    deep: bool = False  # per-op inspection ran in this step
    process_rank: int = 0  # the process (torchrun rank) that ran it; 0 for a single process
    offload_hooks: bool = False  # accelerate-style offload hooks seen on modules (a chosen offload)
    top_h2d: list[ModuleVolume] = Field(default_factory=list)
    top_casts: list[ModuleVolume] = Field(default_factory=list)
    top_cpu: list[ModuleVolume] = Field(default_factory=list)
    top_syncs: list[ModuleVolume] = Field(default_factory=list)


class RunInfo(_M):
    """Facts about the run that runtime rules compare step metrics against."""

    device: str = ""  # "cuda", "cuda:0", "cpu"
    expects_gpu: bool = False
    gpu_name: str = ""
    vram_total_bytes: int = 0
    power_limit_w: float = 0.0
    platform_os: str = ""
    pipeline: str = ""  # "builtin", "repo"
    denoiser: str = ""  # class name of the model judged
    model_weight_bytes: int = 0  # parameters + buffers of the denoiser(s)
    model_param_dtype: str = ""
    autocast_dtype: str = ""
    steps_total: int = 0
    size: str = ""
    frames: int = 0
    tokens: int = 0
    args: dict[str, Any] = Field(default_factory=dict)
    torch_version: str = ""


class StepHistory(_M):
    """Steps before the current one, summarised, so a rule can see a trend."""

    count: int = 0
    median_seconds: float = 0.0
    first_seconds: float = 0.0
    max_vram_used_bytes: int = 0


class Phase(_M):
    name: Literal["load", "encode", "denoise", "decode", "save", "other"]
    seconds: float = 0.0
    label: str = ""


class Summary(_M):
    steps: int = 0
    seconds_total: float = 0.0
    median_step_seconds: float = 0.0
    deep_steps: list[int] = Field(default_factory=list)
    h2d_bytes_total: int = 0
    d2h_bytes_total: int = 0
    cast_bytes_total: int = 0
    repeated_cast_bytes_total: int = 0
    cpu_ops_total: int = 0
    syncs_total: int = 0
    vram_peak_bytes: int = 0
    gpu_util_mean: float | None = None
    phases: dict[str, float] = Field(default_factory=dict)
    checked: list[str] = Field(default_factory=list)  # what the guards could see
    not_checked: list[str] = Field(default_factory=list)  # and what they could not (no NVML, CPU run, ...)
    output: str | None = None
    output_bytes: int = 0
    error: str | None = None
    interrupted: bool = False


class Report(_M):
    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    run: RunInfo = Field(default_factory=RunInfo)
    phases: list[Phase] = Field(default_factory=list)
    steps: list[StepMetrics] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    doctor: list[Finding] = Field(default_factory=list)  # the pre-launch findings, when the doctor ran
    summary: Summary = Field(default_factory=Summary)

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


# scope roots of runtime rules
STEP_ROOTS: dict[str, type[BaseModel]] = {"step": StepMetrics, "run": RunInfo, "history": StepHistory}
RUN_ROOTS: dict[str, type[BaseModel]] = {"run": RunInfo, "summary": Summary}
