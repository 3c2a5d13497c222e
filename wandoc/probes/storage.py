"""Where the checkpoints live, and how fast that reads: a 60 GB expert from a spinning disk or a network share
takes minutes per load, and users see only a run that is slow before its first step.

The filesystem comes from the mount table (psutil, the same on Linux, macOS and Windows), the disk under it from
the kernel's block-device tree by the folder's device number (``/sys/dev/block/MAJ:MIN``, so LVM and RAID
members are followed), and the speed from a short read of a checkpoint file that bypasses the page cache
(``O_DIRECT``, macOS ``F_NOCACHE``): a cached read would measure RAM. The read is optional (``--deep``): an
idle HDD spins up and a network share answers in its own time, which a default check must not wait for.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wandoc.facts import StorageFacts

NETWORK_FSTYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "drvfs", "afs", "ceph", "glusterfs", "lustre",
     "gpfs", "beegfs", "davfs", "webdav", "afpfs", "ncpfs", "virtiofs"}
)  # fmt: skip
SAMPLE_CHUNK = 1 << 20  # one direct read; on a 1 MB/s share the sample costs about a second at most
SAMPLE_MAX_BYTES = 32 << 20
SAMPLE_MAX_SECONDS = 0.25
SYS_BLOCK = Path("/sys/dev/block")


def mount_for(path: str, partitions: Iterable[Any]) -> Any | None:
    """The mount whose mount point is the longest prefix of ``path`` (paths compared case-blind on Windows)."""
    norm = os.path.normcase(path)
    best, best_len = None, -1
    for part in partitions:
        mount = os.path.normcase(str(part.mountpoint))
        if not mount:
            continue
        inside = norm == mount or norm.startswith(mount.rstrip("/\\") + os.sep) or mount in ("/", os.sep)
        if inside and len(mount) > best_len:
            best, best_len = part, len(mount)
    return best


def is_network(fstype: str, device: str, opts: str) -> bool:
    low = fstype.lower()
    return (
        low in NETWORK_FSTYPES
        or low.startswith(("nfs", "smb", "cifs"))
        or device.startswith(("//", "\\\\"))
        or "remote" in opts.split(",")  # psutil's mark for a mapped network drive on Windows
    )


def _read_flag(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def block_device(st_dev: int, sys_block: Path = SYS_BLOCK) -> tuple[str, bool | None, bool]:
    """(disk name, rotational, virtual) for a device number; a partition answers for its disk, a device-mapper
    or md device for its members (rotational if any member spins)."""
    node = sys_block / f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        real = Path(os.path.realpath(node))
    except OSError:
        return "", None, False
    if not real.exists():
        return "", None, False
    disk = real.parent if (real / "partition").exists() else real
    members: list[Path] = []
    with contextlib.suppress(OSError):
        members = [Path(os.path.realpath(m)) for m in (disk / "slaves").iterdir()]
    disks = [m.parent if (m / "partition").exists() else m for m in members] or [disk]
    flags = [_read_flag(d / "queue" / "rotational") for d in disks]
    known = [f for f in flags if f in ("0", "1")]
    rotational = any(f == "1" for f in known) if known else None
    virtual = any("virtio" in str(d) or "/xen" in str(d) or d.name.startswith(("vd", "xvd")) for d in disks)
    return disk.name, rotational, virtual


def _direct_fd(path: Path) -> int:
    """A descriptor whose reads skip the page cache; OSError where the filesystem refuses (tmpfs, many FUSE)."""
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        return os.open(path, os.O_RDONLY | direct)
    fd = os.open(path, os.O_RDONLY)
    try:
        import fcntl

        nocache = getattr(fcntl, "F_NOCACHE", None)
        if nocache is None:
            raise OSError("no way to bypass the page cache here")
        fcntl.fcntl(fd, nocache, 1)
    except BaseException:
        os.close(fd)
        raise
    return fd


def sample_read(path: Path, size: int) -> tuple[float, int, str]:
    """MiB/s of direct reads from the middle of ``path``: at most SAMPLE_MAX_BYTES or SAMPLE_MAX_SECONDS."""
    if size < 2 * SAMPLE_CHUNK or not hasattr(os, "preadv"):
        return 0.0, 0, "no file large enough to measure" if size < 2 * SAMPLE_CHUNK else "not measured here"
    try:
        fd = _direct_fd(path)
    except OSError as exc:
        return 0.0, 0, f"direct reads refused ({exc.strerror or exc}): not measured"
    buffer = mmap.mmap(-1, SAMPLE_CHUNK)  # page-aligned, as direct reads want
    offset = (size // 2) // SAMPLE_CHUNK * SAMPLE_CHUNK
    total = 0
    try:
        start = time.perf_counter()
        while total < SAMPLE_MAX_BYTES and offset + SAMPLE_CHUNK <= size:
            got = os.preadv(fd, [buffer], offset)
            if got <= 0:
                break
            total += got
            offset += got
            if time.perf_counter() - start >= SAMPLE_MAX_SECONDS:
                break
        seconds = time.perf_counter() - start
    except OSError as exc:
        return 0.0, total, f"direct read failed ({exc.strerror or exc}): not measured"
    finally:
        os.close(fd)
        buffer.close()
    if total == 0 or seconds <= 0:
        return 0.0, total, "nothing read"
    return total / 2**20 / seconds, total, ""


def probe_storage(folder: Path, largest: Path | None = None, sample: bool = False) -> StorageFacts:
    """Facts about the storage under ``folder``; ``largest`` is the weight file to time when ``sample``."""
    facts = StorageFacts(path=str(folder))
    try:
        real = os.path.realpath(folder)
        try:
            import psutil

            part = mount_for(real, psutil.disk_partitions(all=True))
        except Exception as exc:
            part = None
            facts.error = f"mount table unreadable: {type(exc).__name__}: {exc}"
        if part is not None:
            facts.mount_point, facts.fstype, facts.device = str(part.mountpoint), str(part.fstype), str(part.device)
            facts.network = is_network(facts.fstype, facts.device, str(getattr(part, "opts", "")))
            facts.fuse = facts.fstype.lower().startswith("fuse")  # fuseblk too: ntfs-3g on a Linux dual boot
        if SYS_BLOCK.is_dir():
            facts.disk, facts.rotational, facts.virtual_disk = block_device(os.stat(real).st_dev)
        if not sample:
            facts.read_note = "not measured (wandoc check --deep times a short uncached read)"
        elif largest is None:
            facts.read_note = "no weight file to measure"
        else:
            facts.read_mib_s, facts.read_bytes, facts.read_note = sample_read(largest, largest.stat().st_size)
    except Exception as exc:
        facts.error = f"storage probe failed: {type(exc).__name__}: {exc}"
    return facts
