"""Run a user's own Wan script in this process, as ``python generate.py ARGS`` would, under a guard.

Nothing in the checkout is edited. The runner sets the script's argv, ``__main__``, ``sys.path[0]`` and working
directory, then watches by name (``targets.toml``):

* every module imported from then on is looked at once, right after it loads, for the classes and functions the
  targets name: a scheduler's ``step`` ends a denoising step, ``set_timesteps`` says how many there are, the
  text encoder's call, the VAE's ``decode`` and ``save_video`` are timed as phases, and the file ``save_video``
  writes is the run's output;
* a global forward pre-hook waits for the first forward of a denoiser class (``WanModel`` or a subclass). It
  attaches that model and its siblings (the other expert of Wan2.2 A14B, found on the object that holds it),
  names them by the attribute that holds them (``low_noise_model.blocks.7``), opens the first step, and is then
  removed: a global hook costs every module call in the process. From then on a hook on the denoisers alone
  opens each step at its first forward, and the scheduler's ``step`` closes it, so a step covers both CFG
  forwards and the update.

Forks that renamed the denoiser: when a scheduler step comes and no denoiser is known, the largest module called
between the first two scheduler steps is taken (and the report says so); steps before it are not measured.
Without a known scheduler, one denoiser forward is one step (the guard's own fallback).

Everything installed is removed when the run ends, however it ends, and the checkout's modules are dropped from
``sys.modules`` so a second run (another commit) imports its own code.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import inspect
import os
import runpy
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wandoc.errors import failure_line
from wandoc.metrics import Phase
from wanrun import ending
from wanrun.guard import Guard, GuardStop
from wanrun.guards.discovery import class_names, denoisers_on_stack, inner, owner_of
from wanrun.guards.handles import remove_handles
from wanrun.guards.named import mark
from wanrun.targets import Targets


class ScriptError(ValueError):
    """The script cannot be started (missing, not a file): a user mistake, one line."""


@dataclass
class ScriptOutcome:
    exit_code: int = 0  # the script's own: SystemExit's code, 1 for an exception, 0 otherwise
    error: str | None = None  # the exception that ended it, as "Type: message (at file:line)"
    stopped: GuardStop | None = None  # strict mode ended it
    interrupted: bool = False
    found_by: str = ""  # how the denoiser was found: "class WanModel", "size", "" (not found)
    ended_by: str | None = None  # a signal's name, "os._exit", ... (Summary.ended_by); None: the guard decides


# Taken at import, before any script runs: the runner must restore the process however the script patched os
_chdir, _getpid = os.chdir, os.getpid
_STOP_SIGNALS = [s for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK") if (s := getattr(signal, n, None))]


def _under(path: object, root: Path) -> bool:
    if not isinstance(path, str) or not path:
        return False
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


@dataclass
class _Patch:
    owner: Any
    name: str
    original: Any


@dataclass
class _Saved:
    """What the runner changes for the script, as it was before."""

    import_: Any
    argv: list[str]
    path: list[str]
    cwd: str
    streams: tuple[Any, ...]
    handlers: dict[int, Any]


@dataclass
class _State:
    step_cm: contextlib.AbstractContextManager[None] | None = None
    index: int = 0
    first_step_t: float | None = None
    last_step_t: float | None = None
    first_phase_t: float | None = None
    denoise_at: int = 0  # where the denoise phase goes among the timed phases (they are kept in order)
    schedulers_seen: bool = False
    # fallback: modules called between the first two scheduler steps, when no denoiser class is known
    window: dict[int, nn.Module] | None = None
    scheduler_calls: int = 0
    denoisers: list[nn.Module] = field(default_factory=list)


class RepoRunner:
    """One run of ``script`` in ``repo`` with ``args``, guarded by ``guard``; see the module docstring."""

    def __init__(
        self,
        repo: Path,
        script: str,
        args: list[str],
        guard: Guard,
        targets: Targets,
        *,
        on_total: Callable[[int], None] | None = None,
        on_os_exit: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.repo = repo.resolve()
        self.script = (self.repo / script).resolve()
        if not self.script.is_file():
            raise ScriptError(f"--script {script}: no such file in {self.repo}")
        self.args = list(args)
        self.guard = guard
        self.targets = targets
        self.on_total = on_total
        # the script called os._exit(code) (on the main thread or not): the report must be written before it
        self.on_os_exit = on_os_exit
        self._names = targets.names()
        self._denoiser_names = set(targets.denoisers)
        self._patches: list[_Patch] = []
        self._seen_modules: set[str] = set()
        self._modules_len = 0
        self._pending = False  # a module seen half-executed waits for the next import to be looked at
        self._scanning = False
        self._state = _State()
        self._global_hook: Any = None
        self._local_hooks: list[Any] = []
        self._compiled_calls: list[tuple[nn.Module, Callable[..., Any]]] = []
        self.outcome = ScriptOutcome()
        self._saved: _Saved | None = None
        self._t0 = 0.0
        self.imported: list[str] = []  # the checkout's files the run imported, in order: the code that ran

    # -- the run --------------------------------------------------------------------------------------------

    def run(self) -> ScriptOutcome:
        """Run the script to its end. Exceptions of the script are kept in the outcome, not raised; Ctrl-C and a
        strict stop are kept too. Must be called inside the guard's context."""
        self._saved = _Saved(builtins.__import__, sys.argv[:], sys.path[:], os.getcwd(),
                             (sys.stdin, sys.stdout, sys.stderr), _signal_handlers())  # fmt: skip
        self.guard.leave_to_runner()  # the runner watches the checkout's names and finds its denoiser itself
        self._drop_repo_modules()
        self._seen_modules = set(sys.modules)
        self._modules_len = len(sys.modules)
        self._t0 = time.perf_counter()
        try:
            sys.argv = [str(self.script), *self.args]
            sys.path.insert(0, str(self.script.parent))
            _chdir(self.repo)
            builtins.__import__ = self._importing(self._saved.import_)
            self._patches.append(_Patch(os, "_exit", os._exit))
            os._exit = self._os_exit(os._exit)  # type: ignore[assignment]
            self._global_hook = nn.modules.module.register_module_forward_pre_hook(self._first_forward)
            try:
                runpy.run_path(str(self.script), run_name="__main__")
            except SystemExit as exc:
                self.outcome.exit_code = _exit_code(exc.code)
                if self.outcome.exit_code and not isinstance(exc.code, int):
                    self.outcome.error = str(exc.code)
            except BaseException as exc:
                ending.hold()
                self._close_step((type(exc), exc, exc.__traceback__))
                raise
            ending.hold()
            self._close_step()
        except GuardStop as exc:
            self.outcome.stopped, self.outcome.exit_code = exc, 1
        except KeyboardInterrupt as exc:
            self.outcome.interrupted, self.outcome.exit_code = True, getattr(exc, "exit_code", 130)
            self.outcome.ended_by = getattr(exc, "reason", "KeyboardInterrupt")
        except Exception as exc:
            self.outcome.exit_code = 1
            self.outcome.error = failure_line(exc)
        finally:
            ending.hold()
            self._restore()
        self._tell_guard()
        return self.outcome

    def _restore(self) -> None:
        """Put the process back as it was before the script, each part on its own: a script that broke one of
        them (patched a function, deleted the folder it ran in) must not leave the others undone. Once."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        builtins.__import__ = saved.import_
        self._remove_hooks()
        sys.argv, sys.path[:] = saved.argv, saved.path
        sys.stdin, sys.stdout, sys.stderr = saved.streams  # the runner prints its summary on its own streams
        for sig, handler in saved.handlers.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, handler)
        with contextlib.suppress(OSError):
            _chdir(saved.cwd)
        with contextlib.suppress(Exception):
            self._drop_repo_modules()
        self._record_phases(self._t0)

    def _os_exit(self, real: Callable[[int], Any]) -> Callable[[int], Any]:
        """``os._exit`` for the script: the process ends as it asks, but the report is written first. Only in
        this process: a child forked by the script (multiprocessing) calls it too, and owns no report."""
        pid = _getpid()

        def _exit(status: int) -> Any:
            if _getpid() == pid and self.on_os_exit is not None:
                main = threading.current_thread() is threading.main_thread()
                self.outcome.exit_code, self.outcome.ended_by = _exit_code(status), "os._exit"
                if self.outcome.exit_code:
                    self.outcome.error = f"{self.script.name} ended the process with os._exit({status})"
                ending.hold()
                # each part on its own: the process ends as the script asked, whatever one of them did
                # (closing the step may raise a strict stop, which has nowhere to go now)
                for part in (self._close_step, self._restore) if main else ():
                    with contextlib.suppress(BaseException):
                        part()
                with contextlib.suppress(BaseException):
                    self._tell_guard()
                    self.on_os_exit(status, main)
            real(status)

        return _exit

    def _tell_guard(self) -> None:
        """The guard's report says how the script ended: the runner, not the guard's context, caught it."""
        out = self.outcome
        if out.error is not None:
            self.guard.error = out.error
        elif out.exit_code != 0 and out.stopped is None and not out.interrupted:
            self.guard.error = f"{self.script.name} exited with status {out.exit_code}"
        self.guard.interrupted = self.guard.interrupted or out.interrupted
        if out.ended_by is not None:
            self.guard.ended_by = out.ended_by

    def _drop_repo_modules(self) -> None:
        """Forget the checkout's modules (and any module of the same top-level name from elsewhere), so each
        run imports the code of its own checkout."""
        tops = {p.name for p in self.repo.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
        tops |= {p.stem for p in self.repo.glob("*.py")}
        for name in list(sys.modules):
            mod = sys.modules.get(name)
            path = mod.__dict__.get("__file__") if isinstance(mod, types.ModuleType) else None
            if name.split(".", 1)[0] in tops or _under(path, self.repo):
                sys.modules.pop(name, None)

    def _remove_hooks(self) -> None:
        """Everything the runner installed comes off, each on its own (a failure never keeps the rest on)."""
        remove_handles([h for h in (self._global_hook, *self._local_hooks) if h is not None])
        self._global_hook = None
        self._local_hooks.clear()
        for model, original in reversed(self._compiled_calls):
            with contextlib.suppress(Exception):
                model._compiled_call_impl = original
        self._compiled_calls.clear()
        for patch in reversed(self._patches):
            with contextlib.suppress(Exception):
                setattr(patch.owner, patch.name, patch.original)
        self._patches.clear()

    def _record_phases(self, t0: float) -> None:
        st = self._state
        if st.first_step_t is not None and st.last_step_t is not None:
            denoise = Phase(name="denoise", seconds=st.last_step_t - st.first_step_t)
            self.guard.phases.insert(st.denoise_at, denoise)
        starts = [t for t in (st.first_phase_t, st.first_step_t) if t is not None]
        if starts:
            self.guard.phases.insert(0, Phase(name="load", seconds=min(starts) - t0))

    # -- imports: patch the named classes and functions as their modules load ---------------------------

    def _importing(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def __import__(name: str, *args: Any, **kwargs: Any) -> Any:
            module = original(name, *args, **kwargs)
            if len(sys.modules) != self._modules_len or self._pending:
                self._scan_new_modules()
            return module

        return __import__

    def _scan_new_modules(self) -> None:
        """Look at modules that finished importing. Only real modules, through their ``__dict__``: some
        packages put objects in ``sys.modules`` whose ``__getattr__`` imports more (Cython's ``cimports``), and
        an attribute read must not start an import from inside this one."""
        if self._scanning:
            return
        self._scanning = True
        try:
            self._modules_len, self._pending = len(sys.modules), False
            for name in list(sys.modules):
                if name in self._seen_modules:
                    continue
                mod = sys.modules.get(name)
                namespace = mod.__dict__ if isinstance(mod, types.ModuleType) else None
                if namespace is None:
                    self._seen_modules.add(name)
                    continue
                spec = namespace.get("__spec__")
                if isinstance(spec, ModuleSpec) and getattr(spec, "_initializing", False):
                    self._pending = True  # still executing (this import is nested in it): look again when done
                    continue
                self._seen_modules.add(name)
                path = namespace.get("__file__")
                if _under(path, self.repo):
                    self.imported.append(Path(str(path)).resolve().relative_to(self.repo).as_posix())
                for target in self._names.intersection(namespace):
                    obj = namespace[target]
                    if getattr(obj, "__module__", None) == name:
                        self._patch(mod, target, obj)
        finally:
            self._scanning = False

    def _patch(self, module: Any, name: str, obj: Any) -> None:
        t = self.targets
        if inspect.isclass(obj):
            for dotted in [*t.step_methods, *t.schedule_methods, *(n for v in t.phases.values() for n in v)]:
                cls_name, _, method = dotted.partition(".")
                if cls_name != name or not method or not callable(obj.__dict__.get(method)):
                    continue
                original = obj.__dict__[method]
                if isinstance(original, staticmethod | classmethod):
                    continue
                if dotted in t.step_methods:
                    wrapped = self._wrap_step(original)
                elif dotted in t.schedule_methods:
                    wrapped = self._wrap_schedule(original)
                else:
                    wrapped = self._wrap_phase(original, t.phase_of(dotted) or "other", None)
                self._patches.append(_Patch(obj, method, original))
                setattr(obj, method, wrapped)
            if name in {d.split(".", 1)[0] for d in t.step_methods}:
                self._state.schedulers_seen = True
        elif callable(obj):
            phase = t.phase_of(name)
            if phase is None and name not in t.outputs:
                return
            self._patches.append(_Patch(module, name, obj))
            setattr(module, name, self._wrap_phase(obj, phase or "save", t.outputs.get(name)))

    # -- wrappers -------------------------------------------------------------------------------------------

    def _wrap_step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def step(sched: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(sched, *args, **kwargs)
            self._scheduler_stepped()
            return result

        return mark(step)

    def _wrap_schedule(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def set_timesteps(sched: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(sched, *args, **kwargs)
            if not self._state.denoisers:  # a model compiled in place runs no hook: found where the loop keeps it
                found = denoisers_on_stack(self._denoiser_names, skip=(Guard, RepoRunner))
                if found:
                    self._adopt([m for _, m in found], found_by=f"class {type(inner(found[0][1])).__name__}")
                    self._remove_global_hook()
            with contextlib.suppress(Exception):  # a count we cannot read only costs the ETA
                total = len(sched.timesteps)
                self.guard.progress(0, total)
                if self.on_total is not None:
                    self.on_total(total)
            return result

        return mark(set_timesteps)

    def _wrap_phase(self, original: Callable[..., Any], phase: str, output_arg: str | None) -> Callable[..., Any]:
        signature = _signature(original)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._state.first_phase_t is None:
                self._state.first_phase_t = time.perf_counter()
            if self._state.step_cm is not None:  # a phase inside the loop belongs to the step
                return original(*args, **kwargs)
            with self.guard.phase(phase):
                result = original(*args, **kwargs)
            if output_arg is not None:
                self._record_output(signature, output_arg, args, kwargs, result)
            return result

        return mark(timed)

    def _record_output(self, signature: inspect.Signature | None, arg: str, args: Any, kwargs: Any, result: Any):
        path: Any = None
        if signature is not None:
            with contextlib.suppress(TypeError):
                path = signature.bind_partial(*args, **kwargs).arguments.get(arg)
        if path is None and isinstance(result, str | os.PathLike):
            path = result
        if isinstance(path, str | os.PathLike):
            written = Path(path) if Path(path).is_absolute() else Path(os.getcwd()) / path
            self.guard.record_output(written)

    # -- denoisers and steps --------------------------------------------------------------------------------

    def _is_denoiser_class(self, module: nn.Module) -> bool:
        return bool(self._denoiser_names & class_names(module))

    def _first_forward(self, module: nn.Module, args: Any) -> None:
        """Global pre-hook: waits for a denoiser (by class, else records candidates for the size fallback). It
        does nothing while dynamo traces a compiled model (a torch.compile wrapper is seen, and adopted, at its
        own call, before its inner model is traced)."""
        if torch.compiler.is_compiling():
            return
        st = self._state
        if st.window is not None:
            st.window.setdefault(id(module), module)
        if st.denoisers or not self._is_denoiser_class(module):
            return
        self._adopt([module], found_by=f"class {type(module).__name__}")
        self._remove_global_hook()
        self._open_step()

    def _adopt(self, found: list[nn.Module], found_by: str) -> None:
        kind = type(found[0])
        owner_name, siblings = owner_of(
            found[0], lambda m: type(m) is kind or self._is_denoiser_class(m), skip=(Guard, RepoRunner)
        )
        models = list(dict.fromkeys([*found, *(m for _, m in siblings)]))
        names = {id(m): n for n, m in siblings}
        if id(found[0]) not in names:
            names[id(found[0])] = owner_name or "denoiser"
        for model in models:
            self.guard.attach_model(model, names.get(id(model), "denoiser"), denoiser=True)
            compiled_call = model.__dict__.get("_compiled_call_impl")
            if compiled_call is None:
                self._local_hooks.append(model.register_forward_pre_hook(self._denoiser_forward, prepend=True))
            else:  # compiled in place: its hooks run inside the compiled code, so its compiled call is wrapped
                self._wrap_compiled(model, compiled_call)
        self._state.denoisers = models
        self.outcome.found_by = found_by

    def _wrap_compiled(self, model: nn.Module, original: Callable[..., Any]) -> None:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._denoiser_forward(model, args)
            return original(*args, **kwargs)

        model._compiled_call_impl = call
        self._compiled_calls.append((model, original))

    def _remove_global_hook(self) -> None:
        if self._global_hook is not None:
            remove_handles([self._global_hook])
            self._global_hook = None

    def _denoiser_forward(self, module: nn.Module, args: Any) -> None:
        if self._state.schedulers_seen and self._state.step_cm is None:
            self._open_step()

    def _open_step(self) -> None:
        st = self._state
        if not st.schedulers_seen or st.step_cm is not None:
            return  # no scheduler known: the guard counts one forward as one step by itself
        cm = self.guard.step(st.index)
        cm.__enter__()
        st.step_cm = cm
        if st.first_step_t is None:
            st.first_step_t = time.perf_counter()
            st.denoise_at = len(self.guard.phases)

    def _close_step(self, exc_info: Any = (None, None, None)) -> None:
        st = self._state
        cm, st.step_cm = st.step_cm, None
        if cm is None:
            return
        st.index += 1
        st.last_step_t = time.perf_counter()
        cm.__exit__(*exc_info)  # may raise GuardStop (strict mode)

    def _scheduler_stepped(self) -> None:
        st = self._state
        st.scheduler_calls += 1
        if st.denoisers:
            self._close_step()
            return
        # no denoiser class seen: measure the modules called during one whole scheduler step, take the largest
        if st.window is None:
            st.window = {}
            return
        candidates = [m for m in st.window.values() if isinstance(m, nn.Module)]
        st.window = None
        if not candidates:
            return
        largest = max(candidates, key=lambda m: sum(p.numel() for p in m.parameters()))
        self._adopt([largest], found_by="size")
        self._remove_global_hook()
        st.index = st.scheduler_calls


def _signal_handlers() -> dict[int, Any]:
    """The stop signals' handlers, to put back after the script (main thread only: elsewhere none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or an odd callable: the output file is read from the result
        return None
