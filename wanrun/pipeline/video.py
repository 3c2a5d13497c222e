"""Writing the frames: .mp4 (imageio + imageio-ffmpeg), .gif (imageio's pillow plugin) or .npy (raw uint8).

A clip is written to a hidden temporary file beside its target and renamed into place only when complete, so a
failed or interrupted save never leaves a truncated video where the user expects a finished one. Whether the
output can be written at all (ffmpeg present, folder writable) is checked before the run starts, not after
minutes of denoising.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np


class VideoWriteError(RuntimeError):
    """The output cannot be written; the message says why and what to do instead."""


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise VideoWriteError(
            "writing .mp4 needs imageio-ffmpeg, which is not installed: `pip install imageio-ffmpeg`, "
            "or write a .gif (or .npy) instead, e.g. --out clip.gif"
        ) from exc
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise VideoWriteError(
            f"writing .mp4 needs ffmpeg, which was not found ({exc}); install ffmpeg or set IMAGEIO_FFMPEG_EXE, "
            "or write a .gif (or .npy) instead, e.g. --out clip.gif"
        ) from exc


def check_output(out: Path) -> None:
    """Raise VideoWriteError now if `out` could not be written later."""
    if out.is_dir():
        raise VideoWriteError(f"output {out} is a folder; give a file name such as {out / 'clip.mp4'}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise VideoWriteError(f"cannot write {out}: {parent} is not a writable folder")
    if out.suffix.lower() == ".mp4":
        _ffmpeg_exe()


def _write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    import imageio.v2 as iio

    _ffmpeg_exe()
    with iio.get_writer(
        path,
        format="FFMPEG",  # type: ignore[arg-type]
        mode="I",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        quality=8,
        macro_block_size=16,
        ffmpeg_log_level="error",
    ) as writer:
        for frame in frames:
            writer.append_data(frame)


def _write_gif(frames: np.ndarray, path: Path, fps: int) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, frames, plugin="pillow", extension=".gif", duration=round(1000 / fps), loop=0)


def _write_npy(frames: np.ndarray, path: Path, fps: int) -> None:
    with path.open("wb") as f:
        np.save(f, frames)


_WRITERS = {".mp4": _write_mp4, ".gif": _write_gif, ".npy": _write_npy}


def write_video(frames: np.ndarray, out: Path, fps: int) -> Path:
    """Write uint8 frames (T, H, W, 3) to `out` atomically; return `out`."""
    suffix = out.suffix.lower()
    if suffix not in _WRITERS:
        raise VideoWriteError(f"cannot write {out.name}: use one of {', '.join(_WRITERS)}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{secrets.token_hex(4)}.part{suffix}")
    try:
        _WRITERS[suffix](frames, tmp, fps)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
