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


PhaseName = Literal["load", "encode", "denoise", "decode", "save", "other"]


class _M(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModuleVolume(_M):
    """Bytes or ops attributed to one module (dotted path, e.g. ``blocks.7.ffn.0``)."""

    module: str = Field(description="Dotted module path, e.g. blocks.7.ffn.0.")
    bytes: int = Field(
        0, description="Bytes charged to the module in the step: copied, cast, or written by its CPU ops."
    )
    count: int = Field(0, description="Operations charged to the module in the step: copies, casts, CPU ops or syncs.")


class StepMetrics(_M):
    index: int = Field(0, description="Step number, from 0.")
    seconds: float = Field(0.0, description="Wall time of the step, in seconds.")
    forwards: int = Field(0, description="Denoiser forwards in this step (2 with classifier-free guidance).")
    h2d_bytes: int = Field(0, description="Bytes copied host to device (measured in inspected steps only).")
    d2h_bytes: int = Field(0, description="Bytes copied device to host (measured in inspected steps only).")
    copies: int = Field(0, description="Host-device copies, both directions.")
    h2d_copies: int = Field(0, description="Host-to-device copies.")
    d2h_copies: int = Field(0, description="Device-to-host copies.")
    pageable_copy_bytes: int = Field(0, description="Copied bytes whose host side is not pinned.")
    blocking_copies: int = Field(0, description="Copies the host waited for.")
    weight_h2d_bytes: int = Field(
        0, description="Host-to-device bytes of module parameters and buffers (offload traffic)."
    )
    cast_bytes: int = Field(0, description="Output bytes of all dtype casts.")
    cast_count: int = Field(0, description="Dtype casts.")
    repeated_cast_bytes: int = Field(
        0, description="Bytes of casts of a tensor already cast in an earlier step (weights cast again)."
    )
    repeated_casts: int = Field(0, description="Casts of a tensor already cast in an earlier step.")
    activation_cast_bytes: int = Field(0, description="Bytes of casts of fresh tensors (activations).")
    cpu_ops: int = Field(
        0, description="Heavy ops (matmul, conv, attention) run on CPU tensors while a GPU is expected."
    )
    cpu_flops: float = Field(0.0, description="Floating-point operations of those CPU ops.")
    cpu_resident: list[str] = Field(
        default_factory=list, description="Modules with parameters on the CPU at step time."
    )
    cpu_resident_bytes: int = Field(0, description="Bytes of parameters on the CPU at step time.")
    syncs: int = Field(
        0, description="Times the host waited for the GPU: .item(), .cpu(), nonzero and friends, blocking reads."
    )
    vram_peak_bytes: int = Field(0, description="Torch allocator peak in this step (0: not read).")
    vram_used_bytes: int = Field(0, description="VRAM this process holds, from NVML (0: not read).")
    vram_total_bytes: int = Field(0, description="Dedicated VRAM of the GPU, from NVML.")
    gpu_util: float | None = Field(None, description="Mean NVML utilisation over the step, percent (null: not read).")
    power_w: float | None = Field(None, description="Mean power draw over the step, watts (null: not read).")
    deep: bool = Field(
        False, description="Per-op inspection ran in this step: copy, cast, sync and CPU-op figures exist only then."
    )
    process_rank: int = Field(0, description="The process (torchrun rank) that ran it; 0 for a single process.")
    offload_hooks: bool = Field(False, description="Accelerate-style offload hooks seen on modules (a chosen offload).")
    top_h2d: list[ModuleVolume] = Field(
        default_factory=list, description="Modules that copied the most bytes host to device in this step."
    )
    top_casts: list[ModuleVolume] = Field(
        default_factory=list, description="Modules whose weights were cast the most in this step, in bytes."
    )
    top_cpu: list[ModuleVolume] = Field(
        default_factory=list, description="Modules that ran the most heavy ops on the CPU in this step."
    )
    top_syncs: list[ModuleVolume] = Field(
        default_factory=list, description="Modules that made the host wait for the GPU the most in this step."
    )


class RunInfo(_M):
    """Facts about the run that runtime rules compare step metrics against."""

    device: str = Field("", description="Device of the run: cuda, cuda:0, cpu.")
    expects_gpu: bool = Field(False, description="A GPU run: heavy ops on the CPU are findings.")
    gpu_name: str = Field("", description="Name of the run's GPU.")
    vram_total_bytes: int = Field(0, description="Dedicated VRAM of the run's GPU.")
    power_limit_w: float = Field(0.0, description="Power limit of the run's GPU, watts.")
    platform_os: str = Field("", description="Operating system: Linux, Windows, Darwin.")
    pipeline: Literal["", "builtin", "repo"] = Field(
        "", description="builtin (the built-in Wan-style pipeline) or repo (a user's checkout)."
    )
    denoiser: str = Field("", description="Class name of the model judged.")
    model_weight_bytes: int = Field(0, description="Parameters and buffers of the denoiser(s), in bytes.")
    model_param_dtype: str = Field("", description="Dtype of the denoiser's parameters.")
    autocast_dtype: str = Field("", description="Autocast dtype; empty when autocast is off.")
    steps_total: int = Field(0, description="Steps the run was asked for.")
    size: str = Field("", description="Frame size, WIDTHxHEIGHT.")
    frames: int = Field(0, description="Frames generated.")
    tokens: int = Field(0, description="Tokens per denoiser forward.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="The run's options (built-in pipeline) or the checkout, script and argv (--repo).",
    )
    torch_version: str = Field("", description="Version of torch the run used.")


class StepHistory(_M):
    """Steps before the current one, summarised, so a rule can see a trend."""

    count: int = Field(0, description="Steps before the current one.")
    median_seconds: float = Field(0.0, description="Their median wall time, in seconds.")
    first_seconds: float = Field(0.0, description="Wall time of step 0, in seconds.")
    max_vram_used_bytes: int = Field(0, description="Most VRAM the process held in those steps (NVML).")


class Phase(_M):
    name: PhaseName = Field(description="What the phase was: load, encode, denoise, decode, save, other.")
    seconds: float = Field(0.0, description="Wall time of the phase, in seconds.")
    label: str = Field("", description="The name given to a phase of another kind (name is then other).")


class Summary(_M):
    steps: int = Field(0, description="Steps that ran.")
    seconds_total: float = Field(0.0, description="Wall time of the whole run, in seconds.")
    median_step_seconds: float = Field(0.0, description="Median wall time of a step, in seconds.")
    deep_steps: list[int] = Field(default_factory=list, description="Steps inspected op by op.")
    h2d_bytes_total: int = Field(0, description="Host-to-device bytes over the inspected steps.")
    d2h_bytes_total: int = Field(0, description="Device-to-host bytes over the inspected steps.")
    cast_bytes_total: int = Field(0, description="Cast bytes over the inspected steps.")
    repeated_cast_bytes_total: int = Field(0, description="Repeated cast bytes over the inspected steps.")
    cpu_ops_total: int = Field(0, description="Heavy CPU ops over the inspected steps.")
    syncs_total: int = Field(0, description="Syncs over the inspected steps.")
    vram_peak_bytes: int = Field(0, description="Torch allocator peak over the run.")
    gpu_util_mean: float | None = Field(
        None, description="Mean NVML utilisation over the steps, percent (null: not read)."
    )
    phases: dict[PhaseName, float] = Field(default_factory=dict, description="Seconds per phase name.")
    checked: list[str] = Field(default_factory=list, description="What the guards could see.")
    not_checked: list[str] = Field(
        default_factory=list,
        description="What they could not (no NVML, a CPU run, steps not inspected): a clean report never overclaims.",
    )
    output: str | None = Field(None, description="The video file written, if any.")
    output_bytes: int = Field(0, description="Its size, in bytes.")
    error: str | None = Field(None, description="Why the generation failed (exit 3); null when it did not.")
    interrupted: bool = Field(
        False, description="The run stopped early (Ctrl-C or --strict): the report covers the steps that ran."
    )
    partial: bool = Field(
        False,
        description="The report was saved before the run's end was judged: a checkpoint written after each step "
        "(the process was killed, or is still running), or a report saved in haste (a second signal, the console "
        "closed). It covers the steps judged until then; the step in flight and the run-scope rules are missing.",
    )
    ended_by: str | None = Field(
        None,
        description="What ended the run: finished (it ran to its end; error says if it failed), error, strict, "
        "SIGINT (Ctrl-C), SIGTERM, SIGHUP, SIGBREAK, console closed, parent process ended, os._exit (the script "
        "ended the process itself), KeyboardInterrupt (raised by code). Null while partial: no end was seen.",
    )


class Report(_M):
    schema_: str = Field(default=REPORT_SCHEMA, alias="schema", description="Always wanrun.report/1.")
    run: RunInfo = Field(default_factory=RunInfo, description="What ran, where.")
    phases: list[Phase] = Field(default_factory=list, description="Phases in the order they ran.")
    steps: list[StepMetrics] = Field(default_factory=list, description="One entry per denoising step.")
    findings: list[Finding] = Field(
        default_factory=list, description="Runtime findings, each with the step where it first fired and the module."
    )
    doctor: list[Finding] = Field(
        default_factory=list, description="The pre-launch findings, when the doctor ran (wanrun generate --repo)."
    )
    summary: Summary = Field(default_factory=Summary, description="Totals, medians and what was and was not checked.")

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


# scope roots of runtime rules
STEP_ROOTS: dict[str, type[BaseModel]] = {"step": StepMetrics, "run": RunInfo, "history": StepHistory}
RUN_ROOTS: dict[str, type[BaseModel]] = {"run": RunInfo, "summary": Summary}
