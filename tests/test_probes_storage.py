"""Where checkpoints live: the mount, the disk under it (a fake /sys/dev/block), and a short uncached read."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from wandoc.probes import storage


def part(mountpoint: str, fstype: str, device: str = "", opts: str = "rw") -> SimpleNamespace:
    return SimpleNamespace(mountpoint=mountpoint, fstype=fstype, device=device, opts=opts)


MOUNTS = [
    part("/", "ext4", "/dev/nvme0n1p2"),
    part("/mnt/nas", "nfs4", "nas:/export/models"),
    part("/mnt/nas-old", "cifs", "//nas/old"),
    part("/home/ana/gdrive", "fuse.rclone", "gdrive:"),
    part("/mnt/c", "9p", "C:\\"),
    part("/data", "ext4", "/dev/sdb1"),
]


@pytest.mark.parametrize(
    ("path", "mount"),
    [
        ("/mnt/nas/Wan2.2-T2V-A14B", "/mnt/nas"),
        ("/mnt/nas-old/Wan", "/mnt/nas-old"),  # a prefix of the name is not a prefix of the path
        ("/mnt/nasty", "/"),
        ("/home/ana/gdrive/wan/x.safetensors", "/home/ana/gdrive"),
        ("/data", "/data"),
        ("/opt/models", "/"),
    ],
)
def test_mount_for(path: str, mount: str) -> None:
    found = storage.mount_for(path, MOUNTS)
    assert found is not None and found.mountpoint == mount


@pytest.mark.parametrize(
    ("fstype", "device", "opts", "network"),
    [
        ("nfs4", "nas:/export", "rw", True),
        ("cifs", "//nas/models", "rw", True),
        ("smb3", "//nas/models", "rw", True),
        ("9p", "C:\\", "rw", True),
        ("NTFS", "Z:\\", "rw,remote", True),  # psutil's mapped network drive on Windows
        ("NTFS", "C:\\", "rw,fixed", False),
        ("ext4", "/dev/sda1", "rw", False),
        ("fuse.sshfs", "ana@box:/models", "rw", False),  # FUSE, judged as such
    ],
)
def test_is_network(fstype: str, device: str, opts: str, network: bool) -> None:
    assert storage.is_network(fstype, device, opts) is network


def fake_sys(root: Path, disks: dict[str, str | None], partitions: dict[str, str], links: dict[str, str]) -> Path:
    """A /sys tree: devices/<disk>/queue/rotational, partitions inside their disk, dev/block/MAJ:MIN symlinks."""
    devices = root / "devices" / "pci0000:00"
    for name, flag in disks.items():
        (devices / name / "queue").mkdir(parents=True)
        if flag is not None:
            (devices / name / "queue" / "rotational").write_text(flag + "\n")
        (devices / name / "slaves").mkdir()
    for name, disk in partitions.items():
        (devices / disk / name).mkdir()
        (devices / disk / name / "partition").write_text("1\n")
    block = root / "dev" / "block"
    block.mkdir(parents=True)
    for numbers, target in links.items():
        (block / numbers).symlink_to(devices / target)
    return block


def test_block_device_follows_partitions_and_members(tmp_path: Path) -> None:
    block = fake_sys(
        tmp_path,
        {"sda": "1", "nvme0n1": "0", "dm-0": None, "vda": "1", "sdc": None},
        {"sda1": "sda", "nvme0n1p2": "nvme0n1"},
        {"8:1": "sda/sda1", "259:2": "nvme0n1/nvme0n1p2", "253:0": "dm-0", "252:0": "vda", "8:32": "sdc"},
    )
    devices = tmp_path / "devices" / "pci0000:00"
    (devices / "dm-0" / "slaves" / "nvme0n1").symlink_to(devices / "nvme0n1")
    (devices / "dm-0" / "slaves" / "sda1").symlink_to(devices / "sda" / "sda1")
    assert storage.block_device(os.makedev(8, 1), block) == ("sda", True, False)
    assert storage.block_device(os.makedev(259, 2), block) == ("nvme0n1", False, False)
    assert storage.block_device(os.makedev(253, 0), block) == ("dm-0", True, False)  # LVM over an HDD and an SSD
    assert storage.block_device(os.makedev(252, 0), block) == ("vda", True, True)  # a VM's disk: flag untrusted
    assert storage.block_device(os.makedev(8, 32), block) == ("sdc", None, False)
    assert storage.block_device(os.makedev(0, 45), block) == ("", None, False)  # overlay, btrfs subvolume, ...


def test_a_direct_read_is_timed_and_bounded(tmp_path: Path) -> None:
    big = tmp_path / "diffusion_pytorch_model.safetensors"
    with big.open("wb") as f:
        f.write(os.urandom(48 << 20))
    rate, read, note = storage.sample_read(big, big.stat().st_size)
    if note.startswith("direct reads refused"):
        pytest.skip(f"this filesystem refuses O_DIRECT: {note}")
    assert note == "" and rate > 0 and 0 < read <= storage.SAMPLE_MAX_BYTES and read % storage.SAMPLE_CHUNK == 0
    assert storage.sample_read(big, 1 << 20) == (0.0, 0, "no file large enough to measure")


def test_a_filesystem_that_refuses_direct_reads_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def refuse(path: Path) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")  # what many FUSE filesystems answer to O_DIRECT

    monkeypatch.setattr(storage, "_direct_fd", refuse)
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\0" * (4 << 20))
    assert storage.sample_read(path, path.stat().st_size) == (
        0.0,
        0,
        "direct reads refused (Invalid argument): not measured",
    )


def test_probe_storage_here_without_and_with_the_sample(tmp_path: Path) -> None:
    big = tmp_path / "w.safetensors"
    big.write_bytes(os.urandom(4 << 20))
    quick = storage.probe_storage(tmp_path, big)
    assert quick.error is None and quick.mount_point and quick.fstype
    assert quick.read_mib_s == 0 and "--deep" in quick.read_note
    deep = storage.probe_storage(tmp_path, big, sample=True)
    assert deep.error is None and (deep.read_mib_s > 0 or "refused" in deep.read_note)


def test_probe_storage_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    def broken(all: bool = False) -> list[object]:
        raise OSError("no /proc/self/mounts")

    monkeypatch.setattr(psutil, "disk_partitions", broken)
    facts = storage.probe_storage(tmp_path)
    assert facts.error is not None and "mount table unreadable" in facts.error and facts.mount_point == ""
    gone = storage.probe_storage(tmp_path / "gone")
    assert gone.error is not None and gone.error.startswith("storage probe failed")
