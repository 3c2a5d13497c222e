"""Which of Wan's files serve which task, so code that is imported but never executed is not judged.

Wan's package ``__init__`` imports every pipeline (t2v, i2v, ti2v, s2v, animate, ...), so a static import walk
puts all of them on the path of any run. Only the chosen task's pipeline executes: a chunk loop in the s2v
motioner cannot slow a t2v run. This is Wan-specific knowledge about the official layout (and forks that keep
it); files it does not name are judged as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from wandoc.facts import CodeSite

# task family -> path fragments (relative to the checkout) that only that family executes
TASK_FILES: dict[str, tuple[str, ...]] = {
    "t2v": ("wan/text2video.py",),
    "i2v": ("wan/image2video.py",),
    "ti2v": ("wan/textimage2video.py",),
    "flf2v": ("wan/first_last_frame2video.py",),
    "vace": ("wan/vace.py", "wan/modules/vace_model.py"),
    "s2v": ("wan/speech2video.py", "wan/modules/s2v/"),
    "animate": ("wan/animate.py", "wan/modules/animate/"),
}
# functions no task executes: Wan uses only the encoder half of umt5
NEVER_EXECUTED = ("T5Decoder.", "T5Model.")


def task_family(task: object) -> str | None:
    if not isinstance(task, str) or not task:
        return None
    family = task.split("-", 1)[0].lower()
    return family if family in TASK_FILES else None


def other_task_files(files: Iterable[str], task: object) -> list[str]:
    """Files on the import path that belong only to tasks other than ``task``."""
    family = task_family(task)
    if family is None:
        return []
    others = [frag for fam, frags in TASK_FILES.items() if fam != family for frag in frags]
    return sorted(f for f in files if any(f.endswith(frag) or f"/{frag}" in f"/{f}" for frag in others))


def scope_sites(sites: list[CodeSite], other_files: Iterable[str]) -> list[CodeSite]:
    """Mark sites in other tasks' files, or in functions Wan never calls, as not executed by this run."""
    skip = set(other_files)
    out = []
    for site in sites:
        if site.on_path and (site.file in skip or site.function.startswith(NEVER_EXECUTED)):
            site = site.model_copy(update={"on_path": False})
        out.append(site)
    return out
