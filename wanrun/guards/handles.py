"""Removing torch hook handles even when a user's script patched ``RemovableHandle.remove``.

The guards install global and per-model hooks around a script they do not control. The real ``remove`` is
taken when this module is imported (before any script runs), and each handle is removed on its own, so one
that fails never leaves the others installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Any

import torch.utils.hooks

_remove = torch.utils.hooks.RemovableHandle.remove


def remove_handles(handles: Iterable[Any]) -> None:
    """Remove every handle (a list is emptied too)."""
    for handle in list(handles):
        if handle is not None:
            with suppress(Exception):
                _remove(handle)
    if isinstance(handles, list):
        handles.clear()
