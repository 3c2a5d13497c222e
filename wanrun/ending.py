"""How a guarded run ends when something other than its own code ends it, with its report written either way.

* A terminal or a scheduler asks a run to stop with SIGINT (Ctrl-C), SIGTERM (``kill``, Slurm, systemd,
  ``docker stop``), SIGHUP (the terminal closed) and on Windows SIGBREAK (Ctrl-Break) and the console's close,
  logoff and shutdown events. The first one raises ``StopRequest`` (a ``KeyboardInterrupt``) in the main
  thread: the run unwinds like a Ctrl-C, and the report is finished and written with ``ended_by`` naming the
  signal. Signals the process was started with ignored (``nohup`` ignores SIGHUP) stay ignored.
* Further signals in the next ``GRACE_S`` seconds are noted, not raised: three quick Ctrl-C presses must not
  break the writing of the report the first one asked for. One after that, when the run has still not ended
  (a script that swallowed the first, a cleanup that hangs), leaves at once: the report is written in haste
  from what was judged so far (``partial``) and the process exits. One that comes once the report is written
  leaves at once too, quietly (it would otherwise break an exit handler with a traceback).
* A parent that started this run (``wandoc bisect``) hands it the read end of a pipe in ``WANRUN_PARENT_FD``;
  when the parent dies, even by SIGKILL, the pipe reads end-of-file and the run stops as if it got SIGTERM,
  then leaves at once if it has not ended ``GRACE_S`` later. Nobody is left computing for a parent that is gone.
* Kills nothing can catch (SIGKILL, a power cut) are what ``wanrun.report_file``'s checkpoints are for.

Everything here is import-safe on every platform: the Windows console handler is set up through ctypes only
where ``os.name == "nt"``, and signal handlers only from the main thread.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

GRACE_S = 5.0
PARENT_FD_ENV = "WANRUN_PARENT_FD"
# Windows console events: close (the window's X), logoff, shutdown. Ctrl-C and Ctrl-Break arrive as signals.
_CONSOLE_EVENTS = {2: "console closed", 5: "logoff", 6: "shutdown"}
_os_exit = os._exit  # taken at import: a user's script may wrap os._exit (the runner itself does, see repo_run)


class StopRequest(KeyboardInterrupt):
    """A signal (or the console, or a parent gone) asked the run to stop. ``reason`` names it for the report,
    ``exit_code`` is what the process exits with (128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


def _stop_signals() -> list[signal.Signals]:
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK")
    return [s for n in names if isinstance(s := getattr(signal, n, None), signal.Signals)]


def exit_code_for(signum: int) -> int:
    return 128 + int(signum)


def leave(code: int) -> None:
    """End the process now: flush what was printed, skip what could hang (threads, atexit handlers)."""
    from wandoc.atomic import discard_in_flight

    discard_in_flight()
    with contextlib.suppress(Exception):
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[?25h")  # a live status line hid the cursor; it is not coming back to show it
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _os_exit(code)


class Ending:
    """Installed around ``wanrun generate`` (a context manager). ``haste`` writes the report from what was
    judged so far (``ReportFile.emergency``); ``done()`` says the run's own report is written."""

    def __init__(self, haste: Callable[[str], None] | None = None, grace_s: float = GRACE_S) -> None:
        self.haste = haste
        self.grace_s = grace_s
        self.reason: str | None = None  # the first stop asked
        self.exit_code = 130
        self._first_at = 0.0
        self._noted = False
        self._pending: tuple[str, int] | None = None  # a stop asked from another thread, delivered by a signal
        self._done = threading.Event()
        self._holding = False  # the run's own code is over: signals are noted, never raised into the cleanup
        self._previous: dict[signal.Signals, object] = {}
        self._console_handler: object = None

    # -- the context ----------------------------------------------------------------------------------------

    def __enter__(self) -> Ending:
        global _installed
        _installed = self
        if threading.current_thread() is threading.main_thread():
            for sig in _stop_signals():
                current = signal.getsignal(sig)
                if current is signal.SIG_IGN:  # started ignored (nohup, a background job): not ours to change
                    continue
                self._previous[sig] = current
                signal.signal(sig, self._on_signal)
        self._set_console_handler(True)
        self._watch_parent()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None):
        global _installed
        if _installed is self:
            _installed = None
        self._done.set()
        self._set_console_handler(False)
        for sig, previous in self._previous.items():
            # once a signal stopped the run, the process is on its way out with its report written: one more
            # (the second of three quick Ctrl-C) leaves at once instead of breaking an exit handler with a traceback
            handler = self._leave_now if self.reason is not None else previous
            with contextlib.suppress(TypeError, ValueError, OSError):
                signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        return False

    def _leave_now(self, signum: int, frame: FrameType | None) -> None:
        leave(self.exit_code)

    def done(self) -> None:
        """The run's report is written: nothing more to save in haste."""
        self._done.set()

    def hold(self) -> None:
        """The run's own code is over and the report is being finished: from now on a signal is noted, never
        raised into that work (it would leave hooks installed or the report unwritten)."""
        self._holding = True

    # -- signals --------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._pending is not None:
            (reason, code), self._pending = self._pending, None
        else:
            reason, code = signal.Signals(signum).name, exit_code_for(signum)
        if self._done.is_set():
            leave(self.exit_code if self.reason else code)
        if self.reason is None and not self._holding:
            self.reason, self.exit_code, self._first_at = reason, code, time.monotonic()
            raise StopRequest(reason, code)
        if not self._first_at:
            self._first_at = time.monotonic()  # the first signal, come while the report was being finished
        if time.monotonic() - self._first_at < self.grace_s:
            if not self._noted:
                self._noted = True
                _say(f"stopping ({self.reason or reason}); the report is being written. A signal after "
                     f"{self.grace_s:.0f} s leaves at once")  # fmt: skip
            return
        self._hurry(reason, code)

    def _hurry(self, reason: str, code: int) -> None:
        """Write the report from what was judged so far, and leave."""
        if self.haste is not None and not self._done.is_set():
            with contextlib.suppress(BaseException):
                self.haste(reason)
        _say(f"{reason}: left at once; the report covers the steps judged until now")
        leave(self.exit_code if self.reason else code)

    def stop_from_thread(self, reason: str, code: int) -> None:
        """Ask the main thread to stop as a signal would; leave at once if it has not ended ``grace_s`` later."""
        if self._done.is_set():
            return
        vehicle = next((s for s in self._previous if s in (signal.SIGTERM, signal.SIGINT)), None)
        if vehicle is not None and self.reason is None:
            self._pending = (reason, code)
            if hasattr(signal, "pthread_kill"):  # a real signal wakes a main thread asleep in a system call
                signal.pthread_kill(threading.main_thread().ident or 0, vehicle)
            else:
                _thread.interrupt_main(vehicle)
        elif self.reason is None:
            self.reason, self.exit_code = reason, code
        if not self._done.wait(self.grace_s):
            self._hurry(reason, code)

    # -- the Windows console --------------------------------------------------------------------------------

    def _console_event(self, event: int) -> bool:
        """Called on the system's thread for each console event; True: handled here."""
        reason = _CONSOLE_EVENTS.get(int(event))
        if reason is None:
            return False  # Ctrl-C, Ctrl-Break: Python's signals take them
        # Windows ends the process a few seconds after a close event: stop, and save in haste in time
        self.grace_s = min(self.grace_s, 3.0)
        self.stop_from_thread(reason, 128 + 1)
        return True

    def _set_console_handler(self, add: bool) -> None:
        if os.name != "nt":
            return
        try:
            import ctypes
            from ctypes import wintypes

            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
            if add:
                routine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)  # type: ignore[attr-defined]
                self._console_handler = routine(self._console_event)  # kept alive while it is installed
                kernel32.SetConsoleCtrlHandler(self._console_handler, True)
            elif self._console_handler is not None:
                kernel32.SetConsoleCtrlHandler(self._console_handler, False)
                self._console_handler = None
        except (AttributeError, OSError, ImportError):
            pass

    # -- a parent that started this run ---------------------------------------------------------------------

    def _watch_parent(self) -> None:
        raw = os.environ.pop(PARENT_FD_ENV, "")  # the script and its children must not inherit it
        if not raw.isdigit():
            return
        fd = int(raw)
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return
            os.set_inheritable(fd, False)
        except OSError:
            return
        threading.Thread(target=self._parent_gone, args=(fd,), name="wanrun-parent-watch", daemon=True).start()

    def _parent_gone(self, fd: int) -> None:
        try:
            while os.read(fd, 1):  # the parent never writes: this returns b"" when its end closes
                pass
        except OSError:
            return
        self.stop_from_thread("parent process ended", exit_code_for(signal.SIGTERM))


_installed: Ending | None = None


def hold() -> None:
    """``Ending.hold`` on the installed one, if any (the guard and the runner call it when the run's code ends)."""
    if _installed is not None:
        _installed.hold()


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"wanrun: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def stop_stragglers(code: int, grace_s: float = GRACE_S) -> None:
    """Before a normal exit: a script that left non-daemon threads running would keep the process alive forever
    after the report was written (Python joins them at exit). Give them ``grace_s`` to end, then leave."""
    main = threading.main_thread()
    left = [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
    if not left:
        return
    names = ", ".join(t.name for t in left[:5]) + (", ..." if len(left) > 5 else "")

    def end() -> None:
        if any(t.is_alive() for t in left):
            _say(f"the script left {len(left)} thread(s) running ({names}); ended the process after {grace_s:g} s")
            leave(code)

    timer = threading.Timer(grace_s, end)
    timer.daemon = True
    timer.start()
