"""The guard: watches a generation step by step and judges each step with the runtime rules.

``with guard(device="cuda") as g: ...`` then ``g.report``. The guard implements the pipeline hooks (phases,
scheduler steps, attached models), so the built-in pipeline, a user's script and a notebook use it the same
way; without explicit steps (a notebook), one forward of the attached denoiser is one step.

Cost model (targets: at most 2% at 480p shapes, 10% at 1,560 tokens where a forward takes ~30 ms and the host
launches just ahead of the device, so every host microsecond and every device drain shows).

* Plain steps cost the host about 0.15 ms of Python (Wan-1.3B module tree, measured on a CPU; half of it the
  runtime rules' evaluation) and never drain the device. The step clock records a CUDA event at each step's
  start and end and reads them once the device has passed them: a step's time is known at the end of the
  next step (or at once, when the device is already done), and its rules are judged then. So ``strict`` stops
  a run one step after a plain step's finding (timing and NVML rules), and phase boundaries (which drain the
  device) or the guard's exit judge what is left. The VRAM peak is the allocator's, booked by the host: no sync.
* Residency: every parameter's device on inspected steps; on the others a sample (each block's first layer
  and a rotating slice), read in full when the sample moved: a model or block moved is seen at the next step,
  one layer within ``Residency.period`` steps. A step whose weights moved is inspected.
* NVML runs on its own thread (utilisation, this process's VRAM, power); a step reads its samples.
* Per-op inspection costs about 10 µs an op on the host (8 µs of it torch's Python dispatch, the rest the
  module hooks and the registry): an inspected step cost +153% at 1,560 tokens on an H100 before this code
  halved its own part, under 1% at 32,760.
  Inspected steps wait for the device at their end and are judged at once, so every per-op finding (casts,
  copies, CPU compute, syncs) comes out, and stops a strict run, at the step that made it. The first
  inspected step sees every forward and the loop code (a repeated cast shows between its two CFG forwards, a
  host copy at the loop); later ones see the first ``deep_forwards`` forwards and the loop code, and count the
  other forwards as copies of the seen ones (CFG runs the same code twice), as the summary says. Inspected are
  the first ``deep_steps`` steps, a step whose weights moved, and then as a sample: every ``deep_every``-th
  step and the step after one that was slow (over ``slow_factor`` times the median of the plain steps before
  it), skipped when everything inspection has cost so far (the first steps included) plus one more would pass
  ``deep_budget`` of the run's own time. On an H100 at 1,560 tokens an inspection costs +165% of a step in
  full and +90% in part, so a 50-step run spends its 3% on steps 0 and 1 and takes no samples; at 480p an
  inspection costs under 1% of a step and the samples continue (``bench/bench_guard_overhead.py``).

What a step is. Steps given with ``g.step(i)`` are the caller's. Otherwise the guard finds the scheduler by
name (``rules/runtime/targets.toml``: Wan's and diffusers' schedulers), and a step ends at its ``step()`` (or at
the callback ``g.step_callback()`` returns, for samplers without a known scheduler); without either, one
forward of the denoiser is one step. A step found this way runs from the end of the one before, so the loop
code between forwards (latents sent to the host and back, a callback) is part of it and inspected with it.

What is watched. ``model=`` or ``attach_model``; else the denoiser is found (``wanrun.guards.discovery``): by
class, else by size, with every expert of a two-expert model; nothing found is a warning in the report, never a
clean one. A compiled denoiser (torch.compile) is watched at its boundary and its ops are not inspected (a
dispatch mode keeps dynamo from compiling at all); what torch.compile compiles is counted per step.

The report says which steps were inspected. Everything the guard installs (hooks, dispatch mode, sampler
thread, wrapped scheduler methods) is removed when the context exits, however it exits. A guard watches one
run: entering it again raises ``GuardReused``.
"""

from __future__ import annotations

import bisect
import os
import platform
import stat
import statistics
import sys
import time
import types
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wandoc import __version__
from wandoc.engine import Finding, Rule
from wandoc.metrics import Phase, Report, RunInfo, StepHistory, StepMetrics, Summary, step_median
from wandoc.probes.system import cpu_model
from wanrun import ending
from wanrun.guards import discovery
from wanrun.guards.casts import CastTracker
from wanrun.guards.clock import StepClock, StepTiming
from wanrun.guards.dispatch import DeepSession, warm_up
from wanrun.guards.handles import remove_handles
from wanrun.guards.host import HostMemory, compile_counters, read_bytes
from wanrun.guards.named import NamedHooks
from wanrun.guards.nvml_sampler import NvmlSampler
from wanrun.guards.residency import Residency
from wanrun.runtime import RuntimeRules, cached_rules, cached_targets

PHASE_NAMES = ("load", "encode", "denoise", "decode", "save", "other")
_DENOISER_HINTS = ("denois", "dit", "transformer", "unet", "noise_model", "expert", "wanmodel")
_OTHER_HINTS = ("vae", "text", "t5", "clip", "encoder", "decoder", "tokenizer", "image")
_stat = os.stat  # taken at import, before any user script runs (a script may patch os)


def _isfile(path: Path) -> bool:
    try:
        return stat.S_ISREG(_stat(path).st_mode)
    except OSError:
        return False


class GuardReused(RuntimeError):
    """A guard watches one run; a second ``with`` on the same object is a mistake, not a second run."""

    def __init__(self) -> None:
        super().__init__("this guard already watched a run; make a new one with guard(...) for the next run")


class GuardStop(Exception):
    """Strict mode met an error-level finding: the run stops here, with the finding as the reason."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"{finding.rule} at step {finding.step}: {finding.title}")
        self.finding = finding


def _looks_like_denoiser(model: nn.Module, name: str) -> bool | None:
    label, cls = name.lower(), type(model).__name__.lower()
    if any(h in label for h in _OTHER_HINTS):
        return False
    if any(h in label or h in cls for h in _DENOISER_HINTS):
        return True
    return None


def _model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _main_dtype(models: Iterable[nn.Module]) -> str:
    by_dtype: dict[torch.dtype, int] = {}
    for model in models:
        for p in model.parameters():
            by_dtype[p.dtype] = by_dtype.get(p.dtype, 0) + p.numel() * p.element_size()
    return str(max(by_dtype, key=lambda d: by_dtype[d])).removeprefix("torch.") if by_dtype else ""


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" means the GPU when torch sees one; anything else is taken as given (an expectation to check)."""
    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(text)


@dataclass
class _Attached:
    name: str
    model: nn.Module
    denoiser: bool
    handles: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)
    # modules compiled in place, whose ``_compiled_call_impl`` the guard wrapped, with the original
    wrapped: list[tuple[nn.Module, Any]] = field(default_factory=list)

    @property
    def watched(self) -> nn.Module:
        """The module whose parameters and paths are read (a compile wrapper's inner model)."""
        return discovery.inner(self.model)


@dataclass
class _OpenStep:
    index: int
    implicit: bool
    root: nn.Module | None
    session: DeepSession | None
    full: bool  # the session inspects every forward (else the first ``deep_forwards``)
    tentative: bool = False  # opened at the end of the step before: kept only if a denoiser forward comes
    was_full_done: bool = False
    sampled: bool = False
    residency_read: bool = False
    resident: list[str] = field(default_factory=list)
    resident_bytes: int = 0
    weights_in: int = 0
    weights_out: int = 0
    timing: StepTiming = field(default_factory=StepTiming)
    # denoiser forwards finished, counted by the post-hook: it also runs for a forward that began before the
    # guard's hooks existed (a runner attaching the model from that forward's pre-hooks)
    forwards: int = 0
    begun: int = 0  # denoiser forwards whose pre-hook (the guard's) ran
    ran: dict[str, int] = field(default_factory=dict)  # forwards per expert (attached denoiser name)
    compiles: tuple[int, float] | None = None  # dynamo's counters at the start


@dataclass
class _Pending:
    """A recorded step whose device time is not known yet; it is judged when it is."""

    step: StepMetrics
    timing: StepTiming
    evaluate: bool  # the step completed (a step cut short by an exception is recorded, not judged)


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _total(values: Iterable[int | float | None]) -> int:
    return int(sum(v for v in values if v is not None))


class Guard:
    """Runtime guard for one generation; see the module docstring. Implements ``wanrun.hooks.RunHooks``."""

    def __init__(
        self,
        device: str | torch.device = "cuda",
        rules: Sequence[Rule] | Sequence[str | Path] | None = None,
        *,
        deep_steps: int = 2,
        deep_every: int = 10,
        deep_budget: float | None = 0.03,
        deep_forwards: int | None = 1,
        slow_factor: float = 1.5,
        strict: bool = False,
        on_finding: Callable[[Finding], None] | None = None,
        on_step: Callable[[StepMetrics], None] | None = None,
        nvml: bool = True,
        model: nn.Module | None = None,
        run: RunInfo | dict[str, Any] | None = None,
        shell: str | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.deep_steps, self.deep_every, self.slow_factor = deep_steps, deep_every, slow_factor
        self.deep_budget = deep_budget
        self.deep_forwards = deep_forwards if deep_forwards else None  # None: inspected steps see every forward
        self.strict = strict
        self.on_finding, self.on_step = on_finding, on_step
        self.on_progress = on_progress  # after a step is judged or a phase ends: a caller saving the report as it goes
        self._rule_dirs = self._rule_paths(rules)
        self._rules = RuntimeRules(self._load_rules(rules), shell)
        self.run = run.model_copy() if isinstance(run, RunInfo) else RunInfo.model_validate(run or {})
        self.run.device = self.run.device or str(self.device)
        self.run.expects_gpu = self.device.type != "cpu"
        self.run.platform_os = self.run.platform_os or platform.system()
        self.run.torch_version = self.run.torch_version or torch.__version__
        self.run.wandoc_version = self.run.wandoc_version or __version__
        self.run.cpu_model = self.run.cpu_model or cpu_model()
        self.steps: list[StepMetrics] = []
        self.phases: list[Phase] = []
        self.findings: list[Finding] = []
        self.output: Path | None = None
        self.error: str | None = None
        self.interrupted = False
        self.ended_by: str | None = None  # what ended the run (Summary.ended_by); set on exit when not said before
        self._want_nvml = nvml
        self._sampler: NvmlSampler | None = None
        self._clock = StepClock(self.device)
        self._casts = CastTracker()
        self._host = HostMemory()
        self._models: list[_Attached] = []
        self._residency: Residency | None = None
        self._offload_kinds: list[str] = []
        self._layerwise = False
        self._open: _OpenStep | None = None
        self._pending: deque[_Pending] = deque()
        self._explicit = False  # the caller gives the steps (``step``)
        self._scheduled = False  # a scheduler (or a step callback) ends the steps
        self._entered = False
        self._active = False  # inside the context
        self._depth = 0  # nesting of attached denoisers' forwards
        self._deep_next = False
        self._deep_from = 0  # the first step that could be inspected (the denoiser known)
        self._full_done = False  # a step was inspected in full
        self._partial: dict[int, tuple[int, int]] = {}  # step -> (forwards inspected, forwards) when scaled
        self._sampled = 0  # deep steps taken as a sample (beyond the first ones and residency changes)
        self._skipped = 0  # sampled inspections skipped to stay within the budget
        self._unclassified = 0  # ops whose classification failed (counted, never raised)
        self._last_resident: list[str] | None = None
        self._resident_bytes = 0
        self._judged = 0  # steps judged so far (always the first ones: steps are judged in order)
        self._plain_sorted: list[float] = []  # seconds of the judged plain steps, sorted
        self._all_sorted: list[float] = []
        self._max_vram_used = 0
        self._autocast_seen = False
        self._siblings_looked = False
        self._compiled = False  # the denoiser runs under torch.compile: its forwards are not inspected
        self._experts_seen: set[str] = set()
        self._t_start: float | None = None
        self._t_end: float | None = None
        self._steps_t0: float | None = None  # when the first step began, and where it went among the phases
        self._steps_t1: float | None = None
        self._denoise_at = 0
        self._summary: Summary | None = None
        self._pending_model = model
        self._named: NamedHooks | None = None
        self._discovery: discovery.Discovery | None = None
        self._late: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self._hooked: dict[int, _Attached] = {}  # id of a module whose forwards are counted -> its denoiser

    @staticmethod
    def _rule_paths(rules: Sequence[Rule] | Sequence[str | Path] | None) -> list[Path]:
        items = list(rules or [])
        return [Path(str(p)) for p in items if not isinstance(p, Rule)]

    @staticmethod
    def _load_rules(rules: Sequence[Rule] | Sequence[str | Path] | None) -> list[Rule]:
        """Rule files are parsed once per process (and again only when one changed on disk)."""
        if rules is None:
            return cached_rules(())
        items = list(rules)
        if all(isinstance(r, Rule) for r in items):
            return [r for r in items if isinstance(r, Rule)]
        return cached_rules(tuple(Path(str(p)) for p in items))

    # -- context --------------------------------------------------------------------------------------------

    def __enter__(self) -> Guard:
        if self._entered:
            raise GuardReused()
        self._entered = self._active = True
        self._t_start = time.perf_counter()
        try:
            if self.deep_steps > 0 or self.deep_every > 0:
                # a one-time cost of the guard, not of the run: the clock restarts after it
                self.run.inspect_op_seconds = warm_up()
                self._t_start = time.perf_counter()
            self._read_run_facts()
            if self._want_nvml and self.device.type == "cuda":
                self._start_nvml()
            targets = cached_targets(tuple(self._rule_dirs))
            self._named = NamedHooks(targets, self)
            self._named.install()
            if self._pending_model is not None:
                self.attach_model(self._pending_model, "denoiser", denoiser=True)
                self.run.found_by = "model"
                self._pending_model = None
            else:
                self._discovery = discovery.Discovery(targets.denoisers, self._adopt)
                self._discovery.install()
        except BaseException as exc:  # Ctrl-C while starting is an interrupted run too, with a report that says so
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        ending.hold()  # the run is over: a signal now must not break the report's making
        try:
            if self._open is not None:
                if self._open.tentative and exc_type is None:
                    self._drop_open()
                else:
                    self._end_step(evaluate=False)
            self._settle(wait=True)  # judge the steps still in flight; the run is over, so no strict stop
        except Exception as err:  # a device that failed: the report keeps what was judged
            warnings.warn(f"wanrun: could not judge the last steps: {err}", stacklevel=2)
        finally:
            self._teardown()
        if exc_type is not None and issubclass(exc_type, GuardStop):
            self.interrupted = True
            self.ended_by = self.ended_by or "strict"
        elif exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.interrupted = True
            self.ended_by = self.ended_by or getattr(exc, "reason", "KeyboardInterrupt")
        elif exc is not None:
            self.error = f"{type(exc).__name__}: {exc}"
        try:
            self.finish()
        except Exception as err:  # never mask the run's own exception with a reporting problem
            warnings.warn(f"wanrun: could not finish the report: {err}", stacklevel=2)
        return False

    def _teardown(self) -> None:
        self._active = False
        self.leave_to_runner()
        for attached in self._models:
            remove_handles(attached.handles)
            for module, original in attached.wrapped:
                with suppress(Exception):
                    module._compiled_call_impl = original
            attached.wrapped.clear()
        remove_handles(list(self._late.values()))
        self._late.clear()
        if self._sampler is not None:
            with suppress(Exception):
                self._sampler.stop()
        if self._t_end is None:
            self._t_end = time.perf_counter()

    def leave_to_runner(self) -> None:
        """Remove the guard's own watching by name and its denoiser search: ``wanrun generate --repo`` does both
        for the user's checkout as it imports, and drives the steps itself."""
        if self._named is not None:
            self._named.remove()
        if self._discovery is not None:
            self._discovery.remove()

    def _read_run_facts(self) -> None:
        self.run.alloc_conf = self.run.alloc_conf or os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
        memory = self._host.read(force=True)
        if memory is not None:
            self.run.swap_used_start_bytes = memory.swap_used
        if self.device.type == "cuda" and torch.cuda.is_available():
            with suppress(Exception):
                index = self.device.index if self.device.index is not None else torch.cuda.current_device()
                major, minor = torch.cuda.get_device_capability(index)
                self.run.gpu_capability = major + minor / 10
                self.run.cudnn_version = torch.backends.cudnn.version()

    def _start_nvml(self) -> None:
        index, uuid, bus = self.device.index or 0, None, None
        if torch.cuda.is_available():
            try:
                index = self.device.index if self.device.index is not None else torch.cuda.current_device()
                props = torch.cuda.get_device_properties(index)
                self.run.gpu_name = self.run.gpu_name or props.name
                self.run.vram_total_bytes = self.run.vram_total_bytes or int(props.total_memory)
                uuid = str(getattr(props, "uuid", "") or "") or None
                if hasattr(props, "pci_bus_id"):
                    bus = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
            except Exception:  # the sampler falls back to the index
                pass
        self._sampler = NvmlSampler(index=index, uuid=uuid, pci_bus_id=bus)
        if self._sampler.start():
            self.run.gpu_name = self.run.gpu_name or self._sampler.name
            self.run.vram_total_bytes = self.run.vram_total_bytes or self._sampler.total_bytes
            self.run.power_limit_w = self.run.power_limit_w or self._sampler.power_limit_w
            self.run.driver_version = self.run.driver_version or self._sampler.driver_version

    # -- RunHooks -------------------------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase of the run, draining the device at both ends so the time is the phase's own. Steps
        still in flight are judged at both ends (strict mode may stop the run there: before a decode, say)."""
        kind = name if name in PHASE_NAMES else "other"
        if self._open is not None and self._open.tentative:
            self._drop_open()  # the loop is over: no step waits for a forward
        self._clock.sync()
        self._settle_between_steps()
        read0 = read_bytes()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with suppress(Exception):  # a failed device must not hide the phase's own exception
                self._clock.sync()
            seconds = time.perf_counter() - t0
            read1 = read_bytes() if read0 is not None else None
            self.phases.append(
                Phase(
                    name=kind,
                    seconds=seconds,
                    label="" if kind == name else name,
                    read_bytes=read1 - read0 if read0 is not None and read1 is not None else None,
                )
            )
        self._settle_between_steps()
        self._progress()

    def _settle_between_steps(self) -> None:
        """Judge the steps in flight when no step is open (a phase boundary, after the device was drained)."""
        stop = self._settle(wait=True) if self._open is None else None
        if stop is not None:
            raise GuardStop(stop)

    @contextmanager
    def step(self, index: int) -> Iterator[None]:
        """One scheduler step (every denoiser forward in it). Strict mode may stop the run as it closes, for a
        finding of this step (inspected steps) or of the step before (plain steps, judged once timed)."""
        self._explicit = True
        if self._discovery is not None:
            self._discovery.repeats = None  # steps are known: the denoiser is the largest module run in one
        if self._open is not None and self._open.tentative:
            self._drop_open()
        if self._open is not None:  # a step inside a step: the outer one measures both
            yield
            return
        self._depth = 0  # a forward interrupted by Ctrl-C (no post-hook) must not hide the next ones
        self._begin_step(index, implicit=False, root=None)
        ok = False
        try:
            yield
            ok = True
        finally:
            stop = self._end_step(evaluate=ok)
        if stop is not None:
            raise GuardStop(stop)

    def attach_model(self, model: nn.Module, name: str, denoiser: bool | None = None) -> None:
        """Watch a model. Denoisers (by ``denoiser``, else by name or class) count forwards and are checked
        for residency; every attached model's weights are recognised in copies and casts. A wrapper called
        through another method (``apply_model``) is watched through the inner model that holds its weights."""
        if any(a.model is model for a in self._models):
            return
        guess = _looks_like_denoiser(model, name) if denoiser is None else denoiser
        is_denoiser = guess if guess is not None else not any(a.denoiser for a in self._models)
        attached = _Attached(name, model, is_denoiser)
        if is_denoiser:
            for point in discovery.hook_points(model):
                self._hook(attached, point)
                self._hooked[id(point)] = attached
            if self._discovery is not None:
                self._discovery.remove()
            self._compiled = self._compiled or discovery.compiled(model)
            self.run.compiled = self._compiled
        self._models.append(attached)
        self._refresh_models()

    def _refresh_models(self) -> None:
        denoisers = [a for a in self._models if a.denoiser]
        self._residency = Residency([(p, a.name, a.watched) for p, a in self._prefixed() if a.denoiser])
        self._last_resident = None
        self.run.denoiser = ", ".join(dict.fromkeys(type(a.watched).__name__ for a in denoisers))
        self.run.model_weight_bytes = sum(_model_bytes(a.watched) for a in denoisers)
        self.run.model_param_dtype = _main_dtype(a.watched for a in denoisers)
        self.run.experts = len(denoisers)

    def _hook(self, attached: _Attached, module: nn.Module) -> None:
        """Count ``module``'s forwards from outside any compiled region: a module compiled in place runs its
        hooks inside the compiled code (traced once, never run again), so its compiled call is wrapped."""
        original = module.__dict__.get("_compiled_call_impl")
        if original is None:
            attached.handles += [
                module.register_forward_pre_hook(self._pre_forward),
                module.register_forward_hook(self._post_forward, always_call=True),
            ]
            return
        guard = self

        def call(*args: Any, **kwargs: Any) -> Any:
            guard._pre_forward(module, args)
            output = None
            try:
                output = original(*args, **kwargs)
            finally:
                guard._post_forward(module, args, output)
            return output

        module._compiled_call_impl = call
        attached.wrapped.append((module, original))

    def progress(self, index: int, total: int) -> None:
        self.run.steps_total = total

    # -- steps found by name: schedulers, step callbacks, phases ---------------------------------------------

    def scheduled(self, scheduler: Any) -> None:
        """A known scheduler's ``set_timesteps`` ran: its ``step()`` ends each step from now on, and its
        timesteps say how many there are."""
        with suppress(Exception):  # a count that cannot be read only costs the ETA
            self.progress(0, len(scheduler.timesteps))
        self._use_scheduler()

    def _use_scheduler(self) -> None:
        if self._explicit or not self._active:
            return
        if not self._scheduled:
            self._scheduled = True
            if self._discovery is not None and self._discovery.active:
                self._discovery.repeats = None  # steps are known: the denoiser is the largest module of one
                self._adopt_on_stack()
            if self._open is not None and self._open.implicit and self._open.forwards == 0:
                self._open.implicit = False
        if self._open is None:
            self._begin_step(len(self.steps), implicit=False, root=None, tentative=True)

    def scheduler_stepped(self) -> None:
        """A known scheduler's ``step()`` returned: the step ends here (the callback's ``step_callback`` too)."""
        if self._explicit or not self._active:
            return
        if not self._scheduled:
            self._use_scheduler()
        st = self._open
        if st is None:
            self._begin_step(len(self.steps), implicit=False, root=None, tentative=True)
            return
        if st.forwards == 0 and not self._adopt_from_window(st):
            return  # no denoiser forward since the last step's end: a second call for the same step
        stop = self._end_step(evaluate=True)
        self._begin_step(len(self.steps), implicit=False, root=None, tentative=True)
        if stop is not None:
            raise GuardStop(stop)

    def step_callback(self) -> Callable[..., Any]:
        """A callback for samplers that call one at the end of each step: ``pipe(..., callback_on_step_end=
        g.step_callback())``, or a ComfyUI-style ``callback(step, x0, x, total_steps)``. Each call ends a step;
        it hands back the dict the sampler passed (diffusers expects its ``callback_kwargs`` back)."""
        self._use_scheduler()

        def callback(*args: Any, **kwargs: Any) -> Any:
            if len(args) >= 4 and isinstance(args[3], int) and not isinstance(args[3], bool) and args[3] > 0:
                self.progress(0, args[3])  # ComfyUI: (step, x0, x, total_steps)
            self.scheduler_stepped()
            given = [a for a in args if isinstance(a, dict)] + [v for v in kwargs.values() if isinstance(v, dict)]
            return given[-1] if given else None

        return callback

    @contextmanager
    def named_phase(self, name: str) -> Iterator[None]:
        """A phase found by name (``encode_prompt``, the VAE's ``decode``); inside a step it belongs to the step."""
        if not self._active or (self._open is not None and not self._open.tentative):
            yield
            return
        with self.phase(name):
            yield

    # -- finding the denoiser ---------------------------------------------------------------------------------

    def _adopt(self, module: nn.Module, found_by: str) -> None:
        """Watch ``module`` as the denoiser (found by ``found_by``), and every expert beside it; from inside its
        first forward's pre-hooks, that forward is counted too."""
        if self._discovery is not None:
            self._discovery.remove()
        name = self._attach_with_siblings(module)
        self.run.found_by = found_by
        if name and self._open is None and not self._explicit and not self._scheduled:
            self._pre_forward(module, ())  # the hooks just added do not run for this call: count it here

    def _attach_with_siblings(self, module: nn.Module) -> str:
        kind = type(discovery.inner(module))
        names = set(cached_targets(tuple(self._rule_dirs)).denoisers)

        def sibling(m: nn.Module) -> bool:
            return type(discovery.inner(m)) is kind or bool(names & discovery.class_names(m))

        owner_name, siblings = discovery.owner_of(module, sibling, skip=(Guard, discovery.Discovery))
        self._siblings_looked = True
        held = dict((id(m), n) for n, m in siblings)
        name = held.get(id(module)) or owner_name or "denoiser"
        self.attach_model(module, name, denoiser=True)
        for n, m in siblings:
            self.attach_model(m, n, denoiser=True)
        return name

    def _adopt_on_stack(self) -> None:
        """The denoisers the loop's objects hold, by class (a model compiled in place runs no hook to be seen by)."""
        names = cached_targets(tuple(self._rule_dirs)).denoisers
        found = discovery.denoisers_on_stack(names, skip=(Guard, discovery.Discovery))
        for name, module in found:
            self.attach_model(module, name, denoiser=True)
        if found:
            self.run.found_by = f"class {type(discovery.inner(found[0][1])).__name__}"
            if self._discovery is not None:
                self._discovery.remove()

    def _adopt_from_window(self, st: _OpenStep) -> bool:
        """At the end of a step when no denoiser is known: the largest module run at the top level in it."""
        d = self._discovery
        if d is None or not d.active or any(a.denoiser for a in self._models):
            return False
        largest = d.largest_in_window()
        if largest is None:
            return False
        calls = d.calls_in_window(largest)
        d.remove()
        self._attach_with_siblings(largest)
        self.run.found_by = "size"
        st.forwards = st.begun = calls
        return True

    def _look_for_siblings(self, module: nn.Module) -> None:
        """Once, at the first forward of a denoiser given by the caller: the other expert held beside it."""
        self._siblings_looked = True
        if sum(a.denoiser for a in self._models) != 1:
            return
        attached = next(a for a in self._models if a.denoiser)
        if self._hooked.get(id(module)) is not attached:
            return
        kind = type(attached.watched)
        names = set(cached_targets(tuple(self._rule_dirs)).denoisers)
        owner_name, siblings = discovery.owner_of(
            attached.model,
            lambda m: type(discovery.inner(m)) is kind or bool(names & discovery.class_names(m)),
            skip=(Guard, discovery.Discovery),
        )
        others = [(n, m) for n, m in siblings if m is not attached.model]
        if not others:
            return
        if attached.name == "denoiser" and owner_name:
            attached.name = owner_name  # paths read transformer.blocks.0 beside transformer_2.blocks.0
        for n, m in others:
            self.attach_model(m, n, denoiser=True)
        self._refresh_models()  # residency and paths with the new names

    # -- the rest of the public surface ----------------------------------------------------------------------

    def record_output(self, path: str | Path | None) -> None:
        """The file the run wrote (its size goes in the summary: a run can 'finish' and write nothing)."""
        self.output = Path(path) if path is not None else None

    @property
    def report(self) -> Report:
        """The report so far (the last step's time may still be the host's); complete once the context exits."""
        summary = self._summary or self._build_summary()
        return Report(
            run=self.run.model_copy(),
            phases=self._phases_with_denoise(),
            steps=list(self.steps),
            findings=list(self.findings),
            summary=summary,
        )

    def snapshot(self) -> Report:
        """The report as far as the run has been judged, marked partial: what is saved while the run goes. Steps
        whose time is not known yet are left out (the step in flight), and run-scope rules are not judged."""
        if self._summary is not None:
            return self.report
        judged = self.steps[: self._judged]
        summary = self._build_summary(judged)
        summary.partial, summary.ended_by = True, None
        return Report(
            run=self.run.model_copy(),
            phases=self._phases_with_denoise(),
            steps=list(judged),
            findings=list(self.findings),
            summary=summary,
        )

    def finish(self) -> Report:
        """Judge the whole run (run-scope rules) and freeze the summary; called on exit, idempotent."""
        if self._summary is None:
            if self._t_end is None:
                self._t_end = time.perf_counter()
            if self.ended_by is None:
                self.ended_by = "error" if self.error else "finished"
            summary = self._build_summary()
            for finding in self._rules.at_end(self.run, summary):
                self._emit(finding)
            self._summary = summary
        return self.report

    def _phases_with_denoise(self) -> list[Phase]:
        """The phases, with the denoising loop as a phase of its own where nobody timed one: from the first
        step's start to the last step's end, in its place among the others."""
        phases = list(self.phases)
        if self._steps_t0 is None or self._steps_t1 is None or any(p.name == "denoise" for p in phases):
            return phases
        phases.insert(
            min(self._denoise_at, len(phases)), Phase(name="denoise", seconds=self._steps_t1 - self._steps_t0)
        )
        return phases

    # -- steps ----------------------------------------------------------------------------------------------

    def _prefixed(self) -> list[tuple[str, _Attached]]:
        """Module path prefix of each model: none for a sole denoiser (paths read ``blocks.7.ffn.0``)."""
        sole = sum(a.denoiser for a in self._models) == 1
        return [("" if a.denoiser and sole else a.name, a) for a in self._models]

    def _prefixed_models(self) -> list[tuple[str, str, nn.Module]]:
        return [(p, a.name, a.watched) for p, a in self._prefixed()]

    def _expert_of(self, module: nn.Module) -> str:
        attached = self._hooked.get(id(module))
        return attached.name if attached is not None else ""

    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        if not self._autocast_seen:
            self._autocast_seen = True
            kind = self.device.type if self.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
            if torch.is_autocast_enabled(kind) and not self.run.autocast_dtype:
                self.run.autocast_dtype = str(torch.get_autocast_dtype(kind)).removeprefix("torch.")
        if not self._siblings_looked:
            self._look_for_siblings(module)
        self._depth += 1
        if self._depth > 1:  # a denoiser run inside another: the outer forward is the one that counts
            return
        st = self._open
        if st is None:
            if self._explicit:
                return
            self._begin_step(len(self.steps), implicit=not self._scheduled, root=module)
            if (st := self._open) is None:
                return
        if st.begun == 0:
            self._first_forward(st, module)
        st.begun += 1
        expert = self._expert_of(module)
        st.ran[expert] = st.ran.get(expert, 0) + 1
        if st.session is not None:
            inspect = st.full or self.deep_forwards is None or st.begun <= self.deep_forwards
            if self._compiled or not inspect:
                st.session.pause()  # compiled code, or the same code again (counted by scaling the inspected)
            else:
                st.session.forward_begins(module)

    def _post_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        self._depth = max(self._depth - 1, 0)
        st = self._open
        if self._depth or st is None:
            return
        st.forwards += 1
        if st.session is not None:
            st.session.forward_ends()
        if st.implicit and (st.root is module or st.root is None):
            stop = self._end_step(evaluate=True)
            # the next step starts now (the loop code after this forward is its), unless the forward failed:
            # torch runs this hook from its exception handler then, and nothing may be hooked in meanwhile
            if self._active and not self._explicit and sys.exc_info()[0] is None:
                self._begin_step(len(self.steps), implicit=not self._scheduled, root=None, tentative=True)
            if stop is not None:
                raise GuardStop(stop)

    def _want_deep(self, index: int) -> bool:
        if self._discovery is not None and self._discovery.active:
            # no denoiser known yet: what it is (a compiled model, which a dispatch mode would keep from compiling)
            # decides how to inspect it, so the first inspected steps are the first ones once it is known
            self._deep_from = len(self.steps) + 1
            return False
        if len(self.steps) - self._deep_from < self.deep_steps:
            return True
        if not (self._deep_next or (self.deep_every > 0 and index % self.deep_every == 0)):
            return False
        self._deep_next = False
        if not self._within_budget():
            self._skipped += 1
            return False
        self._sampled += 1
        return True

    def _within_budget(self) -> bool:
        """Would one more sampled inspection keep everything inspection has cost in this run, the first steps
        included, under ``deep_budget`` of the run's own time? Costs are measured: an inspected step's time over
        the median plain step; the next sample is priced at the median partial inspection so far. The run's
        length is the scheduler's step count when known, else the steps so far."""
        if self.deep_budget is None:
            return True
        done = self.steps[: len(self.steps) - len(self._pending)]
        deep = [s.seconds for s in done if s.deep]
        plain = [s.seconds for s in done if not s.deep]
        if not deep or not plain:
            return True
        partial = [s.seconds for s in done if s.deep and s.index in self._partial]
        base = statistics.median(plain)
        spent = sum(max(seconds - base, 0.0) for seconds in deep)
        extra = max(statistics.median(partial or deep) - base, 0.0)
        steps = max(self.run.steps_total, len(done) + 1)
        return spent + extra <= self.deep_budget * steps * base

    def _check_residency(self, deep: bool) -> tuple[bool, list[str], int, int, int]:
        """(inspect this step, CPU-resident modules, their bytes, bytes moved in and out since the last full
        check): a full check on inspected steps, the first one and when the sample moved; weights that moved
        since the last full check get the step inspected."""
        residency = self._residency
        if residency is None or not self.run.expects_gpu:
            return deep, [], 0, 0, 0
        last = self._last_resident
        moved_in = moved_out = 0
        if deep or last is None or residency.moved(len(self.steps)):
            resident, self._resident_bytes = residency.check()
            moved_in, moved_out = residency.moved_in, residency.moved_out
            if last is not None and resident != last:
                deep = True  # weights moved since the last step: look at what the step does with them
            self._last_resident = last = resident
        return deep, last, self._resident_bytes, moved_in, moved_out

    def _new_session(self) -> DeepSession:
        if self._residency is not None:
            self._offload_kinds = self._residency.offload_hooks()
            self._layerwise = self._residency.layerwise_casting()
        # module paths and weights read afresh: modules may have been replaced since (LoRA, a patched block)
        return DeepSession(
            self._prefixed_models(),
            self._casts,
            self.run.expects_gpu,
            meta_run=self.device.type == "meta",
            late=self._late_pop_hook,
        )

    def _late_pop_hook(self, module: nn.Module) -> bool:
        """A forward hook after ``module``'s own, kept until the run ends, that pops it from the inspected step's
        module stack: copies its hooks make are charged to it."""
        if id(module) not in self._late:
            self._late[id(module)] = module.register_forward_hook(self._late_pop, always_call=True)
        return True

    def _late_pop(self, module: nn.Module, args: Any, output: Any) -> None:
        st = self._open
        if st is not None and st.session is not None:
            st.session.stack.pop(module, args, output)

    def _begin_step(self, index: int, implicit: bool, root: nn.Module | None, tentative: bool = False) -> None:
        """Open a step. A step opened where it starts (a ``step()``, a forward) reads residency now; one opened
        at the end of the step before (``tentative``) reads it at its first forward, where the weights are where
        they will compute from (an expert switched in by the loop code before it is seen in this step)."""
        sampled_before = self._sampled
        deep = self._want_deep(index)
        moved: tuple[list[str], int, int, int] = ([], 0, 0, 0)
        if not tentative:
            deep, *rest = self._check_residency(deep)
            moved = (rest[0], rest[1], rest[2], rest[3])
        session, full, was_full_done = None, False, self._full_done
        if deep:
            full = not self._full_done or self.deep_forwards is None
            self._full_done = True
            session = self._new_session()
        self._open = st = _OpenStep(index, implicit, root, session, full, tentative, was_full_done)
        st.resident, st.resident_bytes, st.weights_in, st.weights_out = moved
        st.residency_read = not tentative
        st.sampled = self._sampled != sampled_before
        if self._discovery is not None:
            self._discovery.mark()
        st.compiles = compile_counters()
        if session is not None:
            session.start()
        st.timing = self._clock.start()
        if self._steps_t0 is None:
            self._steps_t0, self._denoise_at = time.perf_counter(), len(self.phases)

    def _first_forward(self, st: _OpenStep, module: nn.Module) -> None:
        st.tentative = False
        if st.root is None:
            st.root = module
        if st.residency_read:
            return
        st.residency_read = True
        deep, st.resident, st.resident_bytes, st.weights_in, st.weights_out = self._check_residency(
            st.session is not None
        )
        if deep and st.session is None:  # weights moved: inspect the rest of this step
            st.full = not self._full_done or self.deep_forwards is None
            self._full_done = True
            st.session = self._new_session()
            st.session.start()

    def _drop_open(self) -> None:
        """Forget a step opened at the end of the one before that no denoiser forward came to (the loop ended)."""
        st, self._open = self._open, None
        if st is None:
            return
        if st.session is not None:
            st.session.stop()
        self._full_done = st.was_full_done
        self._sampled -= st.sampled

    def _end_step(self, evaluate: bool) -> Finding | None:
        """Close the open step and record it; judge the steps whose time is known (an inspected one at once).
        Returns a strict-mode stop."""
        st, self._open = self._open, None
        if st is None:
            return None
        if st.forwards == 0:
            self._adopt_from_window(st)  # no denoiser known: the largest module the step ran is
        timing = st.timing
        try:
            self._clock.stop(timing)
        except Exception:  # the device failed mid-step: keep the host's time, no peak
            timing.t1 = timing.t1 or time.perf_counter()
            timing.give_up()
        finally:
            deep = st.session.stop(st.forwards) if st.session is not None else {}
        self._steps_t1 = timing.t1
        if st.session is not None:
            self._unclassified += st.session.errors
            if st.session.skipped:
                self._partial[st.index] = (st.session.inspected, st.forwards)
            deep["inspect_seconds"] = st.session.mode.ops * (self.run.inspect_op_seconds or 0.0)
        kept = self._kept_on_device(st)
        resident, resident_bytes, parked, parked_bytes = self._split_parked(st)
        after = compile_counters()
        compiles = compile_seconds = None
        if after is not None:
            before = st.compiles or (0, 0.0)
            compiles, compile_seconds = after[0] - before[0], after[1] - before[1]
        memory = self._host.read()
        experts = [n for n, k in st.ran.items() if k and n]
        step = StepMetrics(
            index=st.index,
            seconds=timing.seconds if timing.seconds is not None else timing.host_seconds,
            forwards=st.forwards,
            cpu_resident=resident,
            cpu_resident_bytes=resident_bytes,
            parked=parked,
            parked_bytes=parked_bytes,
            experts_run=experts,
            new_experts=[n for n in experts if n not in self._experts_seen],
            weights_in_bytes=st.weights_in,
            weights_out_bytes=st.weights_out,
            weights_kept_bytes=kept,
            compiles=compiles,
            compile_seconds=compile_seconds,
            vram_peak_bytes=timing.peak,
            vram_reserved_bytes=timing.reserved,
            ram_available_bytes=memory.available if memory else None,
            ram_total_bytes=memory.total if memory else None,
            swap_used_bytes=memory.swap_used if memory else None,
            deep=st.session is not None,
            offload_hooks=bool(self._offload_kinds),
            layerwise_casting=self._layerwise,
            **deep,
        )
        self._experts_seen.update(experts)
        self.steps.append(step)
        self._pending.append(_Pending(step, timing, evaluate))
        return self._settle(wait=step.deep)

    def _kept_on_device(self, st: _OpenStep) -> int | None:
        """Bytes of parameters that came onto the device during an inspected step and stayed there: a whole-model
        offload (diffusers' ``enable_model_cpu_offload``) loads the denoiser at its first forward, once, which is
        not the per-forward traffic a per-block offload pays. Read again only on inspected steps (a full walk of
        the parameters); the next step's moves count from here. None: not read."""
        if st.session is None or self._residency is None or not self.run.expects_gpu or not st.residency_read:
            return None
        return self._check_residency(deep=True)[3]  # a full read: the bytes moved in since the step's own

    def _split_parked(self, st: _OpenStep) -> tuple[list[str], int, list[str], int]:
        """(CPU-resident modules, bytes, parked experts, bytes): an expert of several that did not compute in
        this step and sits on the CPU is parked there (Wan2.2's ``init_on_cpu``, offload), not left behind."""
        denoisers = [a.name for a in self._models if a.denoiser]
        if len(denoisers) < 2 or not st.resident or self._residency is None:
            return st.resident, st.resident_bytes, [], 0
        idle = [n for n in denoisers if not st.ran.get(n)]
        parked = [n for n in idle if any(m == n or m.startswith(n + ".") for m in st.resident)]
        if not parked:
            return st.resident, st.resident_bytes, [], 0
        parked_bytes = sum(self._residency.cpu_bytes_under(n) for n in parked)
        resident = [m for m in st.resident if not any(m == n or m.startswith(n + ".") for n in parked)]
        return resident, max(st.resident_bytes - parked_bytes, 0), parked, parked_bytes

    def _settle(self, wait: bool) -> Finding | None:
        """Judge the recorded steps in order, as far as their times are known: older steps are waited for (the
        device is past them, or nearly), the newest only when ``wait``. Returns the first strict-mode stop."""
        stop, judged = None, False
        while self._pending:
            p = self._pending[0]
            try:
                if wait or len(self._pending) > 1:
                    self._clock.wait(p.timing)
                elif not self._clock.poll(p.timing):
                    break
            except Exception:  # the device failed: the host's time will do
                p.timing.give_up()
            self._pending.popleft()
            found = self._judge(p)
            stop = stop or found
            judged = True
        if judged:
            self._progress()
        return stop

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress()
        except Exception as err:  # saving the report as it goes must never stop a generation
            warnings.warn(f"wanrun: could not save the report so far: {err!r}", stacklevel=3)

    def _judge(self, p: _Pending) -> Finding | None:
        step, timing = p.step, p.timing
        step.seconds = timing.seconds if timing.seconds is not None else timing.host_seconds
        if self._sampler is not None and self._sampler.available:
            window = self._sampler.window(timing.t_done - step.seconds, timing.t_done)
            step.vram_used_bytes, step.vram_total_bytes = window.vram_used_bytes, self._sampler.total_bytes
            step.gpu_util, step.power_w = window.gpu_util, window.power_w
        history = self._history()
        self._watch_speed(step)
        self._judged += 1
        bisect.insort(self._all_sorted, step.seconds)
        if not step.deep:
            bisect.insort(self._plain_sorted, step.seconds)
        self._max_vram_used = max(self._max_vram_used, step.vram_used_bytes or 0)
        self._notify(self.on_step, step)
        if not p.evaluate:
            return None
        stop = None
        for finding in self._rules.on_step(step, self.run, history):
            self._emit(finding)
            if self.strict and stop is None and finding.severity == "error":
                stop = finding
        return stop

    def _history(self) -> StepHistory:
        """The steps judged so far; the median prefers steps without per-op inspection (their time is the run's
        own)."""
        if not self._judged:
            return StepHistory()
        first = self.steps[0]
        return StepHistory(
            count=self._judged,
            median_seconds=_median(self._plain_sorted or self._all_sorted),
            first_seconds=first.seconds,
            max_vram_used_bytes=self._max_vram_used,
            first_inspect_seconds=min(first.inspect_seconds or 0.0, first.seconds),
            first_compile_seconds=first.compile_seconds or 0.0,
        )

    def _watch_speed(self, step: StepMetrics) -> None:
        """A plain step much slower than the plain steps before it gets the next step inspected."""
        before = self._plain_sorted
        if not step.deep and len(before) >= 3 and step.seconds > self.slow_factor * _median(before):
            self._deep_next = True

    def _emit(self, finding: Finding) -> None:
        self.findings.append(finding)
        self._notify(self.on_finding, finding)

    @staticmethod
    def _notify(callback: Callable[[Any], None] | None, value: Any) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception as err:  # a display problem must not stop a generation
            warnings.warn(f"wanrun: a guard callback failed: {err!r}", stacklevel=3)

    # -- summary --------------------------------------------------------------------------------------------

    def _build_summary(self, steps: list[StepMetrics] | None = None) -> Summary:
        steps = self.steps if steps is None else steps
        utils = [s.gpu_util for s in steps if s.gpu_util is not None]
        phases: dict[str, float] = {}
        read: dict[str, int] = {}
        for p in self._phases_with_denoise():
            phases[p.name] = phases.get(p.name, 0.0) + p.seconds
            if p.read_bytes is not None:
                read[p.name] = read.get(p.name, 0) + p.read_bytes
        compiles = [s.compiles for s in steps if s.compiles is not None]
        end = self._t_end if self._t_end is not None else time.perf_counter()
        output_bytes = 0
        if self.output is not None:
            with suppress(OSError, ValueError):  # a file gone, or a script that patched os.stat
                output_bytes = _stat(self.output).st_size if _isfile(self.output) else 0
        return Summary(
            steps=len(steps),
            seconds_total=end - self._t_start if self._t_start is not None else 0.0,
            median_step_seconds=step_median((s.seconds, s.deep) for s in steps)[0] or 0.0,
            deep_steps=[s.index for s in steps if s.deep],
            h2d_bytes_total=_total(s.h2d_bytes for s in steps),
            d2h_bytes_total=_total(s.d2h_bytes for s in steps),
            cast_bytes_total=_total(s.cast_bytes for s in steps),
            repeated_cast_bytes_total=_total(s.repeated_cast_bytes for s in steps),
            cpu_ops_total=_total(s.cpu_ops for s in steps),
            syncs_total=_total(s.syncs for s in steps),
            vram_peak_bytes=max((s.vram_peak_bytes or 0 for s in steps), default=0),
            gpu_util_mean=sum(utils) / len(utils) if utils else None,
            phases=phases,
            phase_read_bytes=read,
            denoisers=sum(a.denoiser for a in self._models),
            compiles_total=_total(compiles) if compiles else None,
            weights_in_bytes_total=sum(s.weights_in_bytes for s in steps),
            checked=self._checked(),
            not_checked=self._not_checked(),
            output=str(self.output) if self.output is not None else None,
            output_bytes=output_bytes,
            error=self.error,
            interrupted=self.interrupted,
            ended_by=self.ended_by,
        )

    def _checked(self) -> list[str]:
        out = []
        deep = [s.index for s in self.steps if s.deep]
        if self.steps:
            how = "device time from CUDA events" if self._clock.on_device else "wall time"
            out.append(f"step clock on all {len(self.steps)} steps ({how}, allocator peak)")
        if deep:
            text = f"per-op inspection (copies, casts, syncs, CPU compute, attention kernels) on steps {_ranges(deep)}"
            if self._compiled:
                text += "; the compiled denoiser's forwards were not inspected, the loop code around them was"
            elif self._partial:
                seen = " or ".join(sorted({f"{k} of {n}" for k, n in self._partial.values()}))
                where = f"step{'s' if len(self._partial) > 1 else ''} {_ranges(sorted(self._partial))}"
                text += (
                    f"; on {where}, {seen} forwards and the loop code, the other forwards counted as copies of "
                    "the inspected ones (CFG runs the same code twice)"
                )
            out.append(text)
        if self._residency is not None and self.run.expects_gpu and self.steps:
            period = self._residency.period
            out.append(
                "residency of the denoiser's parameters on every step"
                if period == 1
                else "residency of the denoiser's parameters: all of them on inspected steps, on the others the "
                f"model and each block every step and every layer within {period} steps"
            )
        if self._sampler is not None and self._sampler.available:
            vram = "this process's VRAM" if self._sampler.process_vram else "device VRAM"
            out.append(f"NVML on {self._sampler.name}: utilisation, {vram}, power")
        if self.phases:
            out.append(f"phases timed: {', '.join(dict.fromkeys(p.name for p in self._phases_with_denoise()))}")
        found = {"model": "given", "size": "found as the largest module run every step"}.get(self.run.found_by)
        names = ", ".join(a.name for a in self._models if a.denoiser)
        if names:
            how = found or (f"found by {self.run.found_by}" if self.run.found_by else "attached")
            out.append(f"denoiser watched: {names} ({how})")
        if any(s.ram_available_bytes is not None for s in self.steps):
            out.append("system RAM and swap during the steps")
        if any(s.compiles is not None for s in self.steps):
            out.append("torch.compile's compiles per step")
        return out

    def _not_checked(self) -> list[str]:
        out = []
        plain = [s.index for s in self.steps if not s.deep]
        if plain:
            out.append(f"copies, casts, syncs and CPU compute not inspected on {len(plain)} of {len(self.steps)} steps")
        if self._unclassified:
            out.append(f"{self._unclassified} ops seen during inspection could not be classified")
        if self._skipped:
            budget = f"{self.deep_budget:.0%}" if self.deep_budget is not None else ""
            out.append(
                f"{self._skipped} sampled inspections skipped to keep the guard's cost under {budget} of step time"
            )
        if not any(a.denoiser for a in self._models):
            out.append(
                "nothing watched: no denoiser was given or found (pass model= or call attach_model); no residency, "
                "forwards or expert checks, and a step is whatever the caller marked"
            )
        if self._compiled:
            out.append(
                "ops inside the compiled denoiser (torch.compile runs them outside eager dispatch): copies, casts "
                "and CPU compute there are not seen; residency and the loop code are"
            )
        if not self.run.expects_gpu:
            out.append("a CPU run: no host-device copies, syncs or GPU signals to check")
        elif self._sampler is None:
            out.append("NVML not used" if self.device.type == "cuda" else f"no NVML for a {self.device.type} device")
        elif not self._sampler.available:
            out.append(self._sampler.reason)
        elif self._sampler.process_vram is False:
            out.append("per-process VRAM not visible (container PID namespace or Windows WDDM): device-wide VRAM used")
        if self.run.expects_gpu and self.device.type == "cuda" and not torch.cuda.is_available():
            out.append("torch sees no CUDA device: the run could not use the GPU it expects")
        return out


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 10, 20, 21] -> "0-2, 10, 20-21"."""
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def guard(
    device: str | torch.device = "cuda",
    rules: Sequence[Rule] | Sequence[str | Path] | None = None,
    *,
    deep_steps: int = 2,
    deep_every: int = 10,
    deep_budget: float | None = 0.03,
    strict: bool = False,
    on_finding: Callable[[Finding], None] | None = None,
    **kwargs: Any,
) -> Guard:
    """A guard to use as a context manager: ``with guard(device="cuda", model=dit) as g: ...; g.report``.

    ``rules``: Rule objects, or rule files/directories added to the shipped rules (None: the shipped rules).
    ``deep_steps``: how many first steps get per-op inspection; ``deep_every``: then every N-th step (0: never),
    within ``deep_budget`` (the share of step time sampled inspections may add; None: no limit);
    ``deep_forwards``: denoiser forwards seen by an inspection after the first (None: all of them).
    ``strict``: raise ``GuardStop`` at the end of the first step with an error-level finding (of an inspected
    step), or at the end of the step after it (a plain step's, judged once the device has timed it).
    """
    return Guard(
        device,
        rules,
        deep_steps=deep_steps,
        deep_every=deep_every,
        deep_budget=deep_budget,
        strict=strict,
        on_finding=on_finding,
        **kwargs,
    )


class _CallableModule(types.ModuleType):
    """``from wanrun import guard`` gives this module once anything imported ``wanrun.guard`` (Python binds a
    submodule on its package): calling it is calling ``guard()``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Guard:
        return guard(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
