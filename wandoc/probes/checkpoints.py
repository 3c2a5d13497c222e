"""The weights on disk: which models, how many parameters, in which dtype, from file headers only.

A safetensors file starts with an 8-byte little-endian length and a JSON table of its tensors, so a 57 GB
expert is described by reading a few hundred kilobytes. The dtype found there decides a run's memory (the
A14B experts ship in fp32) and whether fp8 pays off; a truncated download shows as tensors past the file's end.
Files are user input: every length is checked before it is trusted, and a bad file is a fact, never a crash.

GGUF files (ComfyUI-GGUF, Wan2GP) describe their tensors the same way, in a binary table after a short header:
name, shape and ggml type (F16, Q5_K, Q8_0, ...) of each, so a quantised DiT gets a real parameter count and
quantisation, and the rules can say whether the bf16 model would have fitted.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from wandoc.facts import CheckpointFacts, CheckpointFile, CheckpointModel

# A header's JSON becomes Python objects about 26 times its size, so the bound is on what the doctor may build,
# not on what the format allows (100 MB): a real Wan shard's header is well under 1 MiB (a few thousand tensors).
MAX_HEADER_BYTES = 8 * 1024 * 1024
HEADER_BUDGET_BYTES = 64 * 1024 * 1024  # all headers together, so a folder of hostile files stays cheap
MAX_DEPTH = 3
MAX_ENTRIES = 2000  # files and folders looked at; a home directory stops here instead of being crawled

FORMATS = {".safetensors": "safetensors", ".pth": "pth", ".pt": "pt", ".bin": "bin", ".gguf": "gguf", ".ckpt": "ckpt"}
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
DIT_ROLES = ("dit", "high_noise_model", "low_noise_model")

# Innermost folder name -> role, for the official, diffusers and ComfyUI layouts.
FOLDER_ROLES = {
    "high_noise_model": "high_noise_model",
    "low_noise_model": "low_noise_model",
    "transformer": "dit",
    "transformer_2": "dit",
    "diffusion_models": "dit",
    "unet": "dit",
    "text_encoder": "t5",
    "text_encoders": "t5",
    "vae": "vae",
    "image_encoder": "other",
    "clip_vision": "other",
    "loras": "other",
    "lora": "other",
    "process_checkpoint": "other",
}
_SHARD = re.compile(r"^(?P<base>.+)-\d+-of-\d+$")
_NAME_ROLES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"lora|clip|wav2vec|xlm.?roberta|image_encoder|audio"), "other"),
    (re.compile(r"vae"), "vae"),
    (re.compile(r"umt5|(?<![a-z0-9])t5(?![a-z0-9])"), "t5"),
    (re.compile(r"high.?noise"), "high_noise_model"),
    (re.compile(r"low.?noise"), "low_noise_model"),
    (re.compile(r"diffusion_pytorch_model|(?=.*wan).*(t2v|i2v|ti2v|s2v|flf2v|vace|animate)"), "dit"),
]
_NAME_DTYPES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"bf16"), "BF16"),
    (re.compile(r"fp16|(?<![a-z0-9])f16(?![a-z0-9])"), "F16"),
    (re.compile(r"fp32|(?<![a-z0-9])f32(?![a-z0-9])"), "F32"),
    (re.compile(r"e5m2"), "F8_E5M2"),
    (re.compile(r"fp8|e4m3"), "F8_E4M3"),
    (re.compile(r"(?<![a-z0-9])(q[2-8](?:_[0-9a-z]+)*)(?![a-z0-9])"), ""),  # GGUF quantisation, e.g. Q4_K_M
]


class HeaderError(ValueError):
    """A safetensors header that is not what the format promises."""


# -- safetensors headers ----------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A tensor named twice means a damaged header: one of the two would silently vanish."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"name {key!r} appears twice")
        out[key] = value
    return out


def read_header(stream: BinaryIO, size: int) -> tuple[dict[str, Any], int]:
    """The JSON table at the start of a safetensors stream of ``size`` bytes, and its length in bytes."""
    if size < 8:
        raise HeaderError(f"{size} bytes: too short for a safetensors header")
    prefix = stream.read(8)
    if len(prefix) != 8:
        raise HeaderError("truncated before the header length")
    length = int.from_bytes(prefix, "little")
    if length > MAX_HEADER_BYTES:
        raise HeaderError(
            f"header length {length} is over the doctor's {MAX_HEADER_BYTES // 2**20} MiB limit: not read"
        )
    if length > size - 8:
        raise HeaderError(f"header length {length} runs past the end of the {size}-byte file (truncated?)")
    raw = stream.read(length)
    if len(raw) != length:
        raise HeaderError("truncated inside the header")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HeaderError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise HeaderError(f"header is a JSON {type(header).__name__}, not an object")
    return header, length


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise HeaderError(f"tensor {name!r}: shape {value!r} is not a list of non-negative integers")
    return value


def summarize_header(header: dict[str, Any], data_bytes: int) -> tuple[int, dict[str, int]]:
    """Parameters and the dtype histogram (by parameter count) of a header over ``data_bytes`` of tensor data.

    Offsets past ``data_bytes`` mean the file was cut short; a span that disagrees with shape x dtype size
    means the header lies. Either way the file cannot be loaded, so it is an error, not a statistic.
    """
    params = 0
    dtypes: dict[str, int] = defaultdict(int)
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise HeaderError("__metadata__ is not an object")
            continue
        if not isinstance(info, dict):
            raise HeaderError(f"tensor {name!r}: entry is not an object")
        dtype = info.get("dtype")
        if not isinstance(dtype, str) or not dtype:
            raise HeaderError(f"tensor {name!r}: dtype {dtype!r} is not a name")
        count = math.prod(_shape(info.get("shape"), name))
        offsets = info.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise HeaderError(f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end]")
        if offsets[1] > data_bytes:
            raise HeaderError(f"tensor {name!r} ends at byte {offsets[1]} of {data_bytes} (truncated file?)")
        width = DTYPE_BYTES.get(dtype.upper())
        if width is not None and offsets[1] - offsets[0] != count * width:
            raise HeaderError(f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for {count} x {dtype}")
        params += count
        dtypes[dtype.upper()] += count
    return params, dict(dtypes)


def inspect_safetensors(stream: BinaryIO, size: int, path: str) -> CheckpointFile:
    """One safetensors file's facts; anything wrong with it lands in ``error``."""
    facts = CheckpointFile(path=path, format="safetensors", bytes=size)
    try:
        header, length = read_header(stream, size)
        facts.params, facts.dtypes = summarize_header(header, size - 8 - length)
    except HeaderError as exc:
        facts.error = str(exc)
    except Exception as exc:
        facts.error = f"unreadable: {type(exc).__name__}: {exc}"
    return facts


# -- GGUF headers -----------------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # version 1 (August 2023) predates every Wan GGUF; its counts are 32-bit
GGUF_DEFAULT_ALIGNMENT = 32
# ggml type id -> (name, elements per block, bytes per block), as llama.cpp's gguf-py lists them
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}  # fmt: skip
UNQUANTISED = frozenset({"F64", "F32", "F16", "BF16", "I8", "I16", "I32", "I64"})
# metadata value type -> bytes (8: string and 9: array have their own layout)
_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# Bounds on what a header may make the doctor do. A Wan DiT has about 1,100 tensors and a dozen metadata keys;
# an LLM's tokenizer arrays reach a few hundred thousand strings, which are skipped, never built.
MAX_GGUF_TENSORS = 100_000
MAX_GGUF_KEYS = 100_000
MAX_GGUF_ITEMS = 1_000_000  # metadata values and array elements walked, all together
MAX_GGUF_NAME = 65_535  # keys and tensor names (the format caps keys at 65,535 bytes)
MAX_GGUF_DIMS = 4  # GGML_MAX_DIMS
MAX_GGUF_NESTING = 4  # arrays of arrays


class _GgufStream:
    """Little-endian reads and bounded skips over a GGUF stream of ``size`` bytes."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.size, self.pos, self.items, self.read_bytes = stream, size, 0, 0, 0

    def read(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise HeaderError(f"{what} runs past the end of the {self.size}-byte file (truncated?)")
        self.read_bytes += n
        if self.read_bytes > MAX_HEADER_BYTES:
            raise HeaderError(f"header over the doctor's {MAX_HEADER_BYTES // 2**20} MiB limit: not read further")
        data = self.stream.read(n)
        if len(data) != n:
            raise HeaderError(f"truncated inside {what}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise HeaderError(f"{what} runs past the end of the {self.size}-byte file (truncated?)")
        self.stream.seek(n, 1)
        self.pos += n

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.read(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.read(8, what))[0])

    def count(self, n: int = 1) -> None:
        self.items += n
        if self.items > MAX_GGUF_ITEMS:
            raise HeaderError(f"more than {MAX_GGUF_ITEMS} metadata values: not read further")

    def string(self, what: str, limit: int) -> bytes:
        length = self.u64(f"the length of {what}")
        if length > limit:
            raise HeaderError(f"{what} is {length} bytes long (the doctor reads at most {limit})")
        return self.read(length, what)

    def skip_string(self, what: str) -> None:
        self.skip(self.u64(f"the length of {what}"), what)


def _gguf_value(r: _GgufStream, kind: int, key: str, depth: int = 0) -> int | None:
    """Read (integers) or skip (everything else) one metadata value; only integers are ever kept."""
    r.count()
    if kind in _GGUF_SCALARS:
        raw = r.read(_GGUF_SCALARS[kind], f"the value of {key!r}")
        return int.from_bytes(raw, "little", signed=kind in (1, 3, 5, 11)) if kind not in (6, 7, 12) else None
    if kind == _GGUF_STRING:
        r.skip_string(f"the value of {key!r}")
        return None
    if kind != _GGUF_ARRAY:
        raise HeaderError(f"metadata {key!r} has value type {kind}, which the format does not define")
    if depth >= MAX_GGUF_NESTING:
        raise HeaderError(f"metadata {key!r} nests arrays more than {MAX_GGUF_NESTING} deep")
    item = r.u32(f"the item type of {key!r}")
    n = r.u64(f"the length of {key!r}")
    r.count(n)  # before walking it: a hostile count stops here, not after millions of reads
    if item in _GGUF_SCALARS:
        r.skip(n * _GGUF_SCALARS[item], f"the array {key!r}")
    elif item == _GGUF_STRING:
        for _ in range(n):
            r.skip_string(f"an item of {key!r}")
    else:
        for _ in range(n):
            _gguf_value(r, item, key, depth + 1)
    return None


def read_gguf(stream: BinaryIO, size: int) -> tuple[int, dict[str, int], str]:
    """Parameters, the ggml type histogram (by parameter count) and the architecture of a GGUF stream.

    Like the safetensors reader it never trusts a count: every length is checked against the file's size and
    the doctor's bounds before it is used, and tensors whose data would lie past the end mean a truncated file.
    """
    r = _GgufStream(stream, size)
    if size < 4 or r.read(4, "the magic") != GGUF_MAGIC:
        raise HeaderError("not a GGUF file (no GGUF magic)")
    version = r.u32("the version")
    if version not in GGUF_VERSIONS:
        raise HeaderError(f"GGUF version {version}: the doctor reads versions {', '.join(map(str, GGUF_VERSIONS))}")
    n_tensors = r.u64("the tensor count")
    n_keys = r.u64("the metadata count")
    if n_tensors > MAX_GGUF_TENSORS:
        raise HeaderError(f"{n_tensors} tensors is over the doctor's limit of {MAX_GGUF_TENSORS}: not read")
    if n_keys > MAX_GGUF_KEYS:
        raise HeaderError(f"{n_keys} metadata keys is over the doctor's limit of {MAX_GGUF_KEYS}: not read")
    alignment, arch = GGUF_DEFAULT_ALIGNMENT, ""
    for _ in range(n_keys):
        key = r.string("a metadata key", MAX_GGUF_NAME).decode("utf-8", errors="replace")
        kind = r.u32(f"the type of {key!r}")
        if key == "general.architecture" and kind == _GGUF_STRING:
            r.count()
            arch = r.string(f"the value of {key!r}", 256).decode("utf-8", errors="replace")
            continue
        value = _gguf_value(r, kind, key)
        if key == "general.alignment":
            if value is None or value <= 0 or value & (value - 1) or value > 1 << 20:
                raise HeaderError(f"general.alignment {value!r} is not a power of two")
            alignment = value
    tensors: list[tuple[str, list[int], int, int]] = []  # name, shape (innermost first), ggml type, offset
    for i in range(n_tensors):
        name = r.string(f"the name of tensor {i}", MAX_GGUF_NAME)[:120].decode("utf-8", errors="replace")
        n_dims = r.u32(f"the dimensions of {name!r}")
        if n_dims > MAX_GGUF_DIMS:
            raise HeaderError(f"tensor {name!r} has {n_dims} dimensions (ggml allows {MAX_GGUF_DIMS})")
        dims = [r.u64(f"the shape of {name!r}") for _ in range(n_dims)]
        tensors.append((name, dims, r.u32(f"the type of {name!r}"), r.u64(f"the offset of {name!r}")))
    data_start = -(-r.pos // alignment) * alignment
    data_bytes = size - data_start
    params = 0
    dtypes: dict[str, int] = defaultdict(int)
    for name, dims, kind, offset in tensors:
        if kind not in GGML_TYPES:
            raise HeaderError(f"tensor {name!r} has ggml type {kind}, which the doctor does not know")
        dtype, block, width = GGML_TYPES[kind]
        count = math.prod(dims)
        if dims and dims[0] % block:
            raise HeaderError(f"tensor {name!r}: rows of {dims[0]} do not fill whole {dtype} blocks of {block}")
        end = offset + count // block * width
        if offset % alignment or end > data_bytes:
            what = "is not aligned" if offset % alignment else f"ends at byte {end} of {max(data_bytes, 0)}"
            raise HeaderError(f"tensor {name!r} {what} (truncated file?)")
        params += count
        dtypes[dtype] += count
    return params, dict(dtypes), arch


def inspect_gguf(stream: BinaryIO, size: int, path: str) -> CheckpointFile:
    """One GGUF file's facts; anything wrong with it lands in ``error``."""
    facts = CheckpointFile(path=path, format="gguf", bytes=size)
    try:
        facts.params, facts.dtypes, _ = read_gguf(stream, size)
    except HeaderError as exc:
        facts.error = str(exc)
    except Exception as exc:
        facts.error = f"unreadable: {type(exc).__name__}: {exc}"
    return facts


def name_dtype_hint(name: str) -> str:
    """A dtype written in a file name ("...-bf16.pth", "..._fp8_e4m3fn", "...-Q4_K_M.gguf"); a hint, not a fact."""
    low = name.lower()
    for pattern, dtype in _NAME_DTYPES:
        match = pattern.search(low)
        if match:
            return dtype or match.group(1).upper()
    return ""


HEADER_READERS = {"safetensors": inspect_safetensors, "gguf": inspect_gguf}


def file_facts(path: Path, rel: str, budget: list[int]) -> CheckpointFile:
    """Facts for one weight file. safetensors and GGUF headers are read; other formats are pickles, whose
    dtype comes from the file name if at all, recorded with a parameter count of 0 (unknown)."""
    fmt = FORMATS[path.suffix.lower()]
    try:
        size = path.stat().st_size
    except OSError as exc:
        return CheckpointFile(path=rel, format=fmt, error=f"cannot stat: {exc}")
    reader = HEADER_READERS.get(fmt)
    if reader is None:
        hint = name_dtype_hint(path.name)
        return CheckpointFile(path=rel, format=fmt, bytes=size, dtypes={hint: 0} if hint else {})
    if budget[0] <= 0:
        return CheckpointFile(path=rel, format=fmt, bytes=size, error="not read: the header budget is spent")
    try:
        with path.open("rb") as stream:
            facts = reader(stream, size, rel)
            budget[0] -= stream.tell()
            return facts
    except OSError as exc:
        return CheckpointFile(path=rel, format=fmt, bytes=size, error=f"cannot read: {exc}")


# -- walking and grouping ---------------------------------------------------------------------------------


def walk_weights(root: Path) -> tuple[list[Path], list[str]]:
    """Weight files under ``root``, at most MAX_DEPTH folders down and MAX_ENTRIES entries in all.

    Hidden folders are skipped; symlinked files are followed (the Hugging Face cache is made of them) and
    symlinked folders once each.
    """
    found: list[Path] = []
    problems: list[str] = []
    seen_dirs: set[str] = set()
    entries = 0
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            real = os.path.realpath(folder)
            if real in seen_dirs:
                continue
            seen_dirs.add(real)
            with os.scandir(folder) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"cannot list {folder}: {exc.strerror or exc}")
            continue
        subfolders: list[Path] = []
        for entry in listing:
            entries += 1
            if entries > MAX_ENTRIES:
                problems.append(f"stopped after {MAX_ENTRIES} files and folders (is this the checkpoint folder?)")
                return sorted(found), problems
            try:
                if entry.is_dir():
                    if depth < MAX_DEPTH and not entry.name.startswith("."):
                        subfolders.append(Path(entry.path))
                elif entry.is_file() and Path(entry.name).suffix.lower() in FORMATS:
                    found.append(Path(entry.path))
            except OSError:
                continue
        stack.extend((sub, depth + 1) for sub in reversed(subfolders))
    return sorted(found), problems


def role_for(rel: PurePosixPath) -> str:
    """What a weight file is, from its folders (innermost known one) and then its name."""
    folder_role = next((FOLDER_ROLES[p.lower()] for p in reversed(rel.parts[:-1]) if p.lower() in FOLDER_ROLES), None)
    if folder_role not in (None, "dit"):
        return folder_role
    name = rel.name.lower()
    for pattern, role in _NAME_ROLES:
        if pattern.search(name):
            return role
    return folder_role or "other"


def _group_key(rel: PurePosixPath, role: str) -> tuple[str, str, str]:
    stem = rel.name[: -len(rel.suffix)] if rel.suffix else rel.name
    shard = _SHARD.match(stem)
    base = f"{shard.group('base')}-*{rel.suffix}" if shard else rel.name
    return str(rel.parent), role, base


def _main_dtype(dtypes: dict[str, int]) -> str:
    return max(dtypes, key=lambda d: dtypes[d]) if dtypes else ""


def group_models(files: Iterable[CheckpointFile]) -> list[CheckpointModel]:
    """Files that form one model: the shards of one base name in one folder, or a single file.

    A model is named by its folder when it is the only model there ("high_noise_model", "vae"), else by its
    file (or shard pattern), since the official layout keeps the DiT shards, T5 and the VAE side by side.
    """
    groups: dict[tuple[str, str, str], list[CheckpointFile]] = defaultdict(list)
    for f in files:
        rel = PurePosixPath(f.path)
        groups[_group_key(rel, role_for(rel))].append(f)
    per_folder: dict[str, int] = defaultdict(int)
    for parent, _, _ in groups:
        per_folder[parent] += 1
    models: list[CheckpointModel] = []
    for (parent, role, base), members in sorted(groups.items()):
        dtypes: dict[str, int] = defaultdict(int)
        for f in members:
            for dtype, count in f.dtypes.items():
                dtypes[dtype] += count
        label = parent if per_folder[parent] == 1 else str(PurePosixPath(parent) / base)
        models.append(
            CheckpointModel(
                folder=label,
                role=role,
                files=len(members),
                bytes=sum(f.bytes for f in members),
                params=sum(f.params for f in members),
                main_dtype=_main_dtype(dtypes),
                dtypes=dict(dtypes),
            )
        )
    _diffusers_experts(models)
    return models


def _diffusers_experts(models: list[CheckpointModel]) -> None:
    """Diffusers keeps Wan2.2's A14B experts in transformer/ (high noise) and transformer_2/ (low noise)."""
    by_folder = {m.folder: m for m in models if m.role == "dit"}
    for folder, model in by_folder.items():
        path = PurePosixPath(folder)
        if path.name == "transformer_2" and str(path.with_name("transformer")) in by_folder:
            model.role = "low_noise_model"
            by_folder[str(path.with_name("transformer"))].role = "high_noise_model"


def _summarize(facts: CheckpointFacts) -> None:
    dits = [m for m in facts.models if m.role in DIT_ROLES]
    if not dits:
        return
    roles = {m.role for m in dits}
    facts.dit_experts = len(roles & {"high_noise_model", "low_noise_model"}) or 1
    expert = max(dits, key=lambda m: (m.params, m.bytes))
    facts.dit_params = expert.params
    facts.dit_main_dtype = expert.main_dtype
    facts.dit_bytes_on_disk = expert.bytes


def probe_checkpoints(ckpt_dir: Path | None) -> CheckpointFacts:
    facts = CheckpointFacts(given=ckpt_dir is not None)
    if ckpt_dir is None:
        return facts
    try:
        root = Path(ckpt_dir).expanduser()
        facts.dir = str(root)
        if root.is_file() and root.suffix.lower() in FORMATS:  # a single-file checkpoint
            paths, problems, base = [root], [], root.parent
        elif root.is_dir():
            (paths, problems), base = walk_weights(root), root
        else:
            facts.error = f"{root} is not a folder" if root.exists() else f"{root} does not exist"
            return facts
        facts.found = True
        budget = [HEADER_BUDGET_BYTES]
        facts.files = [file_facts(p, p.relative_to(base).as_posix(), budget) for p in paths]
        facts.models = group_models(facts.files)
        _summarize(facts)
        if not paths:
            problems.insert(0, "no weight files (.safetensors, .pth, .pt, .bin, .gguf, .ckpt) found")
        facts.error = "; ".join(problems[:5]) or None
    except Exception as exc:
        facts.error = f"checkpoint probe failed: {type(exc).__name__}: {exc}"
    return facts
