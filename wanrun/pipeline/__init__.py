"""The built-in Wan-style text-to-video pipeline that `wanrun generate` runs by default: no download, any machine.

The config and its shape arithmetic import without torch; `run_pipeline` and `PipelineResult` load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wanrun.pipeline.config import PRESETS, PipelineConfig, model_summary

if TYPE_CHECKING:
    from wanrun.pipeline.run import PipelineResult, run_pipeline

__all__ = ["PRESETS", "PipelineConfig", "PipelineResult", "model_summary", "run_pipeline"]


def __getattr__(name: str) -> Any:
    if name in ("run_pipeline", "PipelineResult"):
        from wanrun.pipeline import run

        return getattr(run, name)
    raise AttributeError(f"module 'wanrun.pipeline' has no attribute {name!r}")
