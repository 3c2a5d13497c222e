"""wanrun: run Wan video generation with runtime guards that say, step by step, where the time goes.

`from wanrun import guard` is resolved on first use, so importing the package stays cheap (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wanrun.guard import guard

__all__ = ["guard"]


def __getattr__(name: str) -> Any:
    if name == "guard":
        from wanrun.guard import guard

        # Importing the submodule bound `wanrun.guard` to the module; the function must win, or
        # `from wanrun import guard` hands out the module.
        globals()["guard"] = guard
        return guard
    raise AttributeError(f"module 'wanrun' has no attribute {name!r}")
