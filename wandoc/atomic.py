"""Writing a file that people and scripts open while it may still be written: all of it or nothing.

The runner writes its report while a user's script runs in the same process, and a script may patch ``os``,
``io``, ``shutil`` or ``tempfile`` (to redirect its own output, or by accident). So the functions used here are
the real ones, taken when this module is imported, and the write goes through file descriptors only.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

_open, _write, _close, _replace, _unlink = os.open, os.write, os.close, os.replace, os.unlink
_lstat, _stat, _mkdir, _getpid, _fspath = os.lstat, os.stat, os.mkdir, os.getpid, os.fspath
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
_counter = [0]
_in_flight: set[str] = set()  # temp files being written: removed by ``discard_in_flight`` on a hasty exit


def _temp_beside(path: Path, tag: str) -> str:
    _counter[0] += 1
    return _fspath(path.parent / f".{path.name}.{_getpid()}-{_counter[0]}.{tag}")


def _refuse_special(path: Path) -> None:
    """A folder, FIFO, socket or device at ``path`` is not ours to replace (``--report /dev/null`` run as root
    would otherwise swap the system's null device for a file). A symbolic link is replaced, not followed."""
    try:
        mode = _lstat(_fspath(path)).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "is a folder; give a file name", _fspath(path))
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OSError(22, "not a regular file (a FIFO, socket or device)", _fspath(path))


def _existing_ancestor(folder: Path) -> Path:
    while True:
        try:
            _stat(_fspath(folder))
            return folder
        except FileNotFoundError:
            if folder.parent == folder:
                return folder
            folder = folder.parent


def _make_folders(folder: Path) -> None:
    missing: list[Path] = []
    while True:
        try:
            mode = _stat(_fspath(folder)).st_mode
        except FileNotFoundError:
            missing.append(folder)
            if folder.parent == folder:
                break
            folder = folder.parent
            continue
        if not stat.S_ISDIR(mode):
            raise NotADirectoryError(20, "not a folder", _fspath(folder))
        break
    for f in reversed(missing):
        with contextlib.suppress(FileExistsError):
            _mkdir(_fspath(f), 0o777)


def check_writable(path: Path) -> None:
    """Raise ``OSError`` now if ``path`` could not be written later: the target is a folder or a special file,
    or no file can be created where it goes (a read-only place, a file where a folder should be). Nothing is
    left behind: missing folders are not created, a probe file in the nearest existing folder is removed."""
    _refuse_special(path)
    folder = _existing_ancestor(path.parent)
    if not stat.S_ISDIR(_stat(_fspath(folder)).st_mode):
        raise NotADirectoryError(20, "not a folder", _fspath(folder))
    probe = _temp_beside(folder / path.name, "probe")
    _close(_open(probe, _CREATE, 0o600))
    _unlink(probe)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, then rename it over ``path``: a reader never sees half
    a file, and a failed write leaves whatever was there before. Missing folders are made. Raises ``OSError``
    (the caller words it)."""
    _make_folders(path.parent)
    _refuse_special(path)
    tmp = _temp_beside(path, "tmp")
    fd = _open(tmp, _CREATE, 0o666)  # the umask applies, as for any file the user's shell would create
    _in_flight.add(tmp)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[_write(fd, view) :]
        finally:
            _close(fd)
        _replace(tmp, _fspath(path))
    except BaseException:
        with contextlib.suppress(OSError):
            _unlink(tmp)
        raise
    finally:
        _in_flight.discard(tmp)


def discard_in_flight() -> None:
    """Remove the temp files of writes that will never finish (the process is about to leave from inside one)."""
    for tmp in list(_in_flight):
        with contextlib.suppress(OSError):
            _unlink(tmp)
        _in_flight.discard(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    """``write_bytes_atomic`` for text, as UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"))
