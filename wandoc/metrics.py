"""What the guards measure: per-step metrics, phases and run info, and the run report.

These models are torch-free on purpose: runtime rules (``scope = "step"`` or ``"run"``) read them, and
``wandoc rules test`` checks those rules on a machine without torch. wanrun fills them; nothing here
measures anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wandoc.engine import Finding

REPORT_SCHEMA = "wanrun.report/2"
# Reports this version reads. In /1 a step that was not inspected carried 0 for what it did not measure; /2 says
# null. A /1 report is read as /2: its unmeasured zeros become nulls (see ``Report``).
REPORT_SCHEMAS = ("wanrun.report/1", REPORT_SCHEMA)
# what only per-op inspection measures: null on the steps that were not inspected
INSPECTED_ONLY = (
    "h2d_bytes", "d2h_bytes", "copies", "h2d_copies", "d2h_copies", "pageable_copy_bytes", "blocking_copies",
    "weight_h2d_bytes", "cast_bytes", "cast_count", "repeated_cast_bytes", "repeated_casts", "activation_cast_bytes",
    "chosen_cast_bytes", "cpu_ops", "cpu_flops", "syncs", "attention", "attention_math_bytes", "inspect_seconds",
)  # fmt: skip


def step_median(timed: Iterable[tuple[object, bool]]) -> tuple[float | None, int, bool]:
    """A run's time per step, the one definition the summary, ``wanrun report``, ``wanrun compare``, the live
    line's ETA and ``wandoc bisect`` use: the median over the steps not inspected op by op (an inspected step also
    pays for the inspection), or over every step when each one was inspected. ``timed`` holds (seconds, deep)
    pairs; a time that is not a finite, non-negative number is a broken measurement and is left out.

    Returns (the median or None, how many steps it is the median of, whether those are the plain steps)."""
    ok = [
        (float(s), deep)
        for s, deep in timed
        if isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) and s >= 0
    ]
    plain = [s for s, deep in ok if not deep]
    values = plain or [s for s, _ in ok]
    return (float(statistics.median(values)) if values else None), len(values), bool(plain)


def median_basis(count: int, plain: bool) -> str:
    """What a median of ``step_median`` is taken over, in words: "6 steps not inspected", "all 2 steps"."""
    noun = f"step{'s' * (count != 1)}"
    return f"{count} {noun} not inspected" if plain else f"all {count} {noun}, each inspected"


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
    """One denoising step. Figures that only per-op inspection measures (copies, casts, syncs, CPU ops,
    attention kernels) are null on the steps that were not inspected (``deep`` false); device figures are null
    where the device cannot show them. Null means "not measured", never "none"."""

    index: int = Field(0, description="Step number, from 0.")
    seconds: float = Field(0.0, description="Wall time of the step, in seconds.")
    forwards: int = Field(0, description="Denoiser forwards in this step (2 with classifier-free guidance).")
    h2d_bytes: int | None = Field(None, description="Bytes copied host to device (null: step not inspected).")
    d2h_bytes: int | None = Field(None, description="Bytes copied device to host (null: step not inspected).")
    copies: int | None = Field(None, description="Host-device copies, both directions (null: not inspected).")
    h2d_copies: int | None = Field(None, description="Host-to-device copies (null: not inspected).")
    d2h_copies: int | None = Field(None, description="Device-to-host copies (null: not inspected).")
    pageable_copy_bytes: int | None = Field(
        None, description="Copied bytes whose host side is not pinned (null: not inspected)."
    )
    blocking_copies: int | None = Field(
        None, description="Host-device copies the host waited for: non_blocking not asked for (null: not inspected)."
    )
    weight_h2d_bytes: int | None = Field(
        None,
        description="Host-to-device bytes of module parameters and buffers, offload traffic (null: not inspected).",
    )
    cast_bytes: int | None = Field(None, description="Output bytes of all dtype casts (null: not inspected).")
    cast_count: int | None = Field(None, description="Dtype casts (null: not inspected).")
    repeated_cast_bytes: int | None = Field(
        None,
        description="Bytes of casts of a weight already cast in an earlier forward, not by a cast the user chose "
        "(null: not inspected).",
    )
    repeated_casts: int | None = Field(None, description="Casts counted in repeated_cast_bytes (null: not inspected).")
    activation_cast_bytes: int | None = Field(
        None, description="Bytes of casts of fresh tensors, activations (null: not inspected)."
    )
    chosen_cast_bytes: int | None = Field(
        None,
        description="Bytes cast by a casting the user chose, diffusers' layerwise casting: weights stored in one "
        "dtype and cast to the compute dtype around each forward (null: not inspected).",
    )
    cpu_ops: int | None = Field(
        None,
        description="Heavy ops (matmul, conv, attention) run on CPU tensors while a GPU is expected "
        "(null: not inspected).",
    )
    cpu_flops: float | None = Field(
        None, description="Floating-point operations of those CPU ops (null: not inspected)."
    )
    attention: dict[str, int] | None = Field(
        None,
        description="Attention calls by the kernel that ran, from the op names: flash, efficient (memory-efficient), "
        "cudnn, cpu_flash, flash_attn (the flash-attn package), sage, math (scores materialised: a softmax over "
        "a score matrix) (null: not inspected).",
    )
    attention_math_bytes: int | None = Field(
        None, description="Bytes of the score matrices math attention materialised (null: not inspected)."
    )
    cpu_resident: list[str] = Field(
        default_factory=list,
        description="Modules with parameters on the CPU at step time, that computed in this step or whose expert "
        "did (an idle expert parked on the CPU is in parked).",
    )
    cpu_resident_bytes: int = Field(0, description="Bytes of the parameters in cpu_resident.")
    parked: list[str] = Field(
        default_factory=list,
        description="Experts of a two-expert model (Wan2.2 A14B) kept on the CPU while the other one computes: "
        "Wan's init_on_cpu or offload, a choice, not a regression.",
    )
    parked_bytes: int = Field(0, description="Bytes of the parked experts' parameters.")
    experts_run: list[str] = Field(
        default_factory=list, description="The denoisers (experts) that ran forwards in this step, by name."
    )
    new_experts: list[str] = Field(
        default_factory=list, description="The denoisers that ran for the first time in this run in this step."
    )
    weights_in_bytes: int = Field(
        0,
        description="Bytes of denoiser parameters that came onto the device since the previous step, read from "
        "where parameters live (every step): an expert switch, a model moved between steps.",
    )
    weights_out_bytes: int = Field(
        0, description="Bytes of denoiser parameters that went back to the CPU since the previous step."
    )
    weights_kept_bytes: int | None = Field(
        None,
        description="Bytes of denoiser parameters that came onto the device during this step's forwards and stayed "
        "there (a whole-model offload loading the denoiser at its first forward): moved once, not per forward "
        "(null: not read, the step was not inspected).",
    )
    syncs: int | None = Field(
        None,
        description="Times the host waited for the GPU: .item(), .cpu(), nonzero and friends, blocking reads "
        "(null: not inspected).",
    )
    compiles: int | None = Field(
        None,
        description="Graphs torch.compile (dynamo) compiled during the step, recompiles included "
        "(null: torch.compile not in use).",
    )
    compile_seconds: float | None = Field(
        None, description="Seconds dynamo spent compiling during the step (null: torch.compile not in use)."
    )
    inspect_seconds: float | None = Field(
        None,
        description="Estimated host time the guard's per-op inspection added to this step: ops seen times the "
        "per-op cost measured when the guard started (null: not inspected).",
    )
    vram_peak_bytes: int | None = Field(None, description="Torch allocator peak in this step (null: not read).")
    vram_reserved_bytes: int | None = Field(
        None, description="Memory the allocator holds from the device at the step's end (null: not read)."
    )
    vram_used_bytes: int | None = Field(None, description="VRAM this process holds, from NVML (null: not read).")
    vram_total_bytes: int | None = Field(None, description="Dedicated VRAM of the GPU, from NVML (null: not read).")
    gpu_util: float | None = Field(None, description="Mean NVML utilisation over the step, percent (null: not read).")
    power_w: float | None = Field(None, description="Mean power draw over the step, watts (null: not read).")
    ram_available_bytes: int | None = Field(
        None, description="System RAM available at the step's end (null: not read this step)."
    )
    ram_total_bytes: int | None = Field(None, description="System RAM in all (null: not read this step).")
    swap_used_bytes: int | None = Field(None, description="Swap in use at the step's end (null: not read this step).")
    deep: bool = Field(
        False, description="Per-op inspection ran in this step: copy, cast, sync and CPU-op figures exist only then."
    )
    process_rank: int = Field(0, description="The process (torchrun rank) that ran it; 0 for a single process.")
    offload_hooks: bool = Field(False, description="Accelerate-style offload hooks seen on modules (a chosen offload).")
    layerwise_casting: bool = Field(
        False, description="Diffusers' layerwise casting hooks seen on the denoiser (a chosen storage dtype)."
    )
    top_h2d: list[ModuleVolume] = Field(
        default_factory=list,
        description="Modules that copied the most bytes host to device in this step (empty: not inspected).",
    )
    top_casts: list[ModuleVolume] = Field(
        default_factory=list,
        description="Modules whose weights were cast the most in this step, in bytes (empty: not inspected).",
    )
    top_cpu: list[ModuleVolume] = Field(
        default_factory=list,
        description="Modules that ran the most heavy ops on the CPU in this step (empty: not inspected).",
    )
    top_syncs: list[ModuleVolume] = Field(
        default_factory=list,
        description="Modules that made the host wait for the GPU the most in this step (empty: not inspected).",
    )


class RunInfo(_M):
    """Facts about the run that runtime rules compare step metrics against."""

    @property
    def cpu_run(self) -> bool:
        """A run on the CPU: no device memory, no host-device traffic, no GPU signals to measure."""
        return bool(self.device) and not self.expects_gpu

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
    experts: int = Field(0, description="Denoisers watched: 2 for a two-expert model (Wan2.2 A14B), 0 for none.")
    found_by: str = Field(
        "",
        description="How the denoiser was found: model (given), class NAME (by class, rules/runtime/targets.toml), "
        "size (the largest module run every step), empty when none was.",
    )
    compiled: bool = Field(False, description="The denoiser, or a part of it, runs under torch.compile.")
    gpu_capability: float | None = Field(None, description="CUDA compute capability of the run's GPU, e.g. 9.0.")
    cudnn_version: int | None = Field(None, description="cuDNN version torch uses, as torch reports it (91002).")
    alloc_conf: str = Field("", description="PYTORCH_CUDA_ALLOC_CONF as the run saw it.")
    swap_used_start_bytes: int | None = Field(None, description="Swap in use when the guard started.")
    inspect_op_seconds: float | None = Field(
        None, description="Host cost of inspecting one op, measured when the guard started (seconds)."
    )
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
    wandoc_version: str = Field("", description="Version of wandoc/wanrun that guarded the run.")
    driver_version: str = Field("", description="NVIDIA driver version, from NVML (empty: not read).")
    cpu_model: str = Field("", description="The host's CPU model, e.g. AMD EPYC 9654 (empty: not read).")


class StepHistory(_M):
    """Steps before the current one, summarised, so a rule can see a trend."""

    count: int = Field(0, description="Steps before the current one.")
    median_seconds: float = Field(0.0, description="Their median wall time, in seconds.")
    first_seconds: float = Field(0.0, description="Wall time of step 0, in seconds.")
    max_vram_used_bytes: int = Field(0, description="Most VRAM the process held in those steps (NVML).")
    first_inspect_seconds: float = Field(
        0.0, description="The inspection's estimated share of step 0's time, seconds (step 0 is always inspected)."
    )
    first_compile_seconds: float = Field(0.0, description="Seconds torch.compile spent compiling in step 0.")


class Phase(_M):
    name: PhaseName = Field(description="What the phase was: load, encode, denoise, decode, save, other.")
    seconds: float = Field(0.0, description="Wall time of the phase, in seconds.")
    label: str = Field("", description="The name given to a phase of another kind (name is then other).")
    read_bytes: int | None = Field(
        None, description="Bytes this process read from storage during the phase (null: not readable here)."
    )


class Summary(_M):
    steps: int = Field(0, description="Steps that ran.")
    seconds_total: float = Field(0.0, description="Wall time of the whole run, in seconds.")
    median_step_seconds: float = Field(
        0.0,
        description="Median wall time of a step, in seconds, over the steps not inspected op by op (an inspected "
        "step also pays for the inspection); over every step when each one was inspected. wanrun compare and "
        "wanrun report use the same definition (reports of schema /1 took the median over every step).",
    )
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
    phase_read_bytes: dict[PhaseName, int] = Field(
        default_factory=dict, description="Bytes read from storage per phase name, where it could be read."
    )
    denoisers: int = Field(0, description="Denoisers the guard watched (0: nothing was watched).")
    compiles_total: int | None = Field(None, description="Graphs torch.compile compiled during the steps.")
    weights_in_bytes_total: int = Field(
        0, description="Denoiser parameters moved onto the device between steps, in bytes (expert switches)."
    )
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
    schema_: str = Field(
        default=REPORT_SCHEMA,
        alias="schema",
        description="wanrun.report/2; wanrun.report/1 files (written before nulls) are read too.",
    )
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

    # ``model_dump_json()`` as a user would call it writes "schema", as ``wanrun report`` expects
    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _unmeasured_is_null(cls, data: Any) -> Any:
        """A /1 report wrote 0 for what a step did not measure: read those as null, as /2 writes them."""
        if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMAS[0]:
            return data
        steps = []
        for step in data.get("steps") or []:
            if isinstance(step, dict):
                step = dict(step)
                if not step.get("deep"):
                    for key in INSPECTED_ONLY:
                        step[key] = None
                for key in ("vram_peak_bytes", "vram_used_bytes", "vram_total_bytes"):
                    if step.get(key) == 0:
                        step[key] = None
            steps.append(step)
        return {**data, "steps": steps}

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @property
    def verdict(self) -> list[Finding]:
        """What the run's verdict, counts and exit code rest on: the doctor's findings before launch and the
        guards' during the run."""
        return [*self.doctor, *self.findings]


# scope roots of runtime rules
STEP_ROOTS: dict[str, type[BaseModel]] = {"step": StepMetrics, "run": RunInfo, "history": StepHistory}
RUN_ROOTS: dict[str, type[BaseModel]] = {"run": RunInfo, "summary": Summary}
