"""The official ``WanModel`` from the ``wan22`` wheel, imported without its package ``__init__``.

``import wan`` initialises CUDA and needs many extra packages; ``wan/modules/model.py`` needs only torch and
diffusers. The two files are unpacked into a private package and imported by path, and the model's
``flash_attention`` is pointed at the official ``attention()``, which falls back to SDPA where flash_attn is
missing (as most Windows users and forks run it).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

PACKAGE = "wan_official_modules"
TINY: dict[str, Any] = dict(dim=64, ffn_dim=128, freq_dim=32, text_dim=32, text_len=16, num_heads=2, num_layers=2)
WAN_1_3B: dict[str, Any] = dict(dim=1536, ffn_dim=8960, freq_dim=256, text_dim=4096, text_len=512, num_heads=12,
                                num_layers=30)  # fmt: skip


def load_model_module(wheel: Path, dest: Path) -> types.ModuleType:
    """Import ``wan/modules/model.py`` from the wheel; returns the module (``module.WanModel``)."""
    if f"{PACKAGE}.model" in sys.modules:
        return sys.modules[f"{PACKAGE}.model"]
    pkg_dir = dest / PACKAGE
    pkg_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in ("model.py", "attention.py"):
            (pkg_dir / name).write_bytes(zf.read(f"wan/modules/{name}"))
    (pkg_dir / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location(
        PACKAGE, pkg_dir / "__init__.py", submodule_search_locations=[str(pkg_dir)]
    )
    assert spec and spec.loader
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    attention = importlib.import_module(f"{PACKAGE}.attention")
    model = importlib.import_module(f"{PACKAGE}.model")
    model.flash_attention = attention.attention  # type: ignore[attr-defined]
    warnings.filterwarnings("ignore", message="Padding mask is disabled")
    return model
