"""GGUF headers: real-shaped quantised Wan DiTs are counted, and truncated or hostile files are facts."""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wandoc.probes import checkpoints as ck

TYPE_IDS = {name: kind for kind, (name, _, _) in ck.GGML_TYPES.items()}


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, kind: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", kind) + payload


def gguf_file(
    tensors: list[tuple[str, list[int], str]],
    *,
    metadata: bytes = b"",
    n_keys: int = 0,
    alignment: int = 32,
    version: int = 3,
    cut_data: int = 0,
) -> bytes:
    """A GGUF file as llama.cpp / ComfyUI-GGUF write it: header, metadata, tensor table, aligned data."""
    meta = kv("general.architecture", 8, gguf_string("wan")) + metadata
    keys = 1 + n_keys
    if alignment != 32:
        meta += kv("general.alignment", 4, struct.pack("<I", alignment))
        keys += 1
    table = b""
    offset = 0
    sizes = []
    for name, shape, dtype in tensors:
        _, block, width = ck.GGML_TYPES[TYPE_IDS[dtype]]
        nbytes = shape[0] // block * width * math.prod(shape[1:])
        table += gguf_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        table += struct.pack("<IQ", TYPE_IDS[dtype], offset)
        sizes.append(nbytes)
        offset += -(-nbytes // alignment) * alignment
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), keys) + meta + table
    head += b"\0" * (-len(head) % alignment)
    return head + b"\0" * max(offset - cut_data, 0)


def wan_dit(blocks: int = 2, dim: int = 256, quant: str = "Q5_K") -> list[tuple[str, list[int], str]]:
    """A miniature Wan DiT as city96's GGUFs hold it: quantised matrices, F32 norms and biases."""
    tensors: list[tuple[str, list[int], str]] = [("patch_embedding.weight", [dim, 16], "F16")]
    for b in range(blocks):
        for part in ("q", "k", "v", "o"):
            tensors.append((f"blocks.{b}.self_attn.{part}.weight", [dim, dim], quant))
            tensors.append((f"blocks.{b}.self_attn.{part}.bias", [dim], "F32"))
        tensors.append((f"blocks.{b}.ffn.0.weight", [dim, 2 * dim], quant))
        tensors.append((f"blocks.{b}.norm3.weight", [dim], "F32"))
    return tensors


def params_by_type(tensors: list[tuple[str, list[int], str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, shape, dtype in tensors:
        out[dtype] = out.get(dtype, 0) + math.prod(shape)
    return out


def inspect(blob: bytes) -> ck.CheckpointFile:
    return ck.inspect_gguf(io.BytesIO(blob), len(blob), "x.gguf")


TOKENS = kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + b"".join(gguf_string(t) for t in ("a", "bb", "")))
SCORES = kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.5, 1.0, 2.0))
NESTED = kv("x.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 4, 1) + b"\1\0\0\0" + struct.pack("<IQ", 8, 0))
SCALARS = b"".join(kv(f"k.{kind}", kind, b"\1" * size) for kind, size in ((0, 1), (5, 4), (6, 4), (7, 1), (11, 8)))
REAL_TENSORS = wan_dit(blocks=1, dim=256, quant="Q8_0")
REAL = gguf_file(REAL_TENSORS, metadata=TOKENS + SCORES + NESTED + SCALARS, n_keys=8)


def test_a_quantised_dit_is_counted() -> None:
    tensors = wan_dit()
    facts = inspect(gguf_file(tensors, metadata=TOKENS + SCORES + NESTED + SCALARS, n_keys=8))
    assert facts.error is None
    assert facts.dtypes == params_by_type(tensors) and facts.params == sum(params_by_type(tensors).values())
    assert max(facts.dtypes, key=lambda d: facts.dtypes[d]) == "Q5_K"


@pytest.mark.parametrize("quant", ["Q4_0", "Q4_K", "Q6_K", "Q8_0", "IQ4_XS", "BF16", "F16"])
def test_every_common_type_and_an_alignment_of_64(quant: str) -> None:
    tensors = wan_dit(blocks=1, quant=quant)
    facts = inspect(gguf_file(tensors, alignment=64))
    assert facts.error is None and facts.dtypes == params_by_type(tensors)


def test_the_probe_reads_gguf_on_disk_and_the_rule_gets_a_parameter_count(tmp_path: Path) -> None:
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    tensors = wan_dit()
    (folder / "wan2.1-t2v-14b-Q5_K_M.gguf").write_bytes(gguf_file(tensors))
    facts = ck.probe_checkpoints(tmp_path)
    (gguf,) = facts.files
    assert (gguf.format, gguf.error, gguf.params) == ("gguf", None, sum(params_by_type(tensors).values()))
    assert facts.dit_params == gguf.params and facts.dit_main_dtype == "Q5_K"
    assert facts.models[0].role == "dit"


def test_version_1_and_other_magic_are_facts() -> None:
    assert "version 1" in (inspect(gguf_file(REAL_TENSORS, version=1)).error or "")
    assert "no GGUF magic" in (inspect(b"GGML" + REAL[4:]).error or "")
    assert "no GGUF magic" in (inspect(b"GG").error or "")


def header(n_tensors: int, n_keys: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_keys)


def tensor_entry(name: str, shape: list[int], kind: int, offset: int = 0) -> bytes:
    dims = b"".join(struct.pack("<Q", d) for d in shape)
    return gguf_string(name) + struct.pack("<I", len(shape)) + dims + struct.pack("<IQ", kind, offset)


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (header(2**63, 0), "tensors is over"),
        (header(0, 2**63), "metadata keys is over"),
        (header(0, 1) + struct.pack("<Q", 2**40), "a metadata key is"),
        (header(0, 1) + gguf_string("k") + struct.pack("<I", 13), "value type 13"),
        (header(0, 1) + gguf_string("k") + struct.pack("<I", 8) + struct.pack("<Q", 2**62), "past the end"),
        (header(0, 1) + kv("k", 9, struct.pack("<IQ", 4, 2**61)), "metadata values"),
        (header(0, 1) + kv("k", 9, struct.pack("<IQ", 8, 2**61)), "metadata values"),
        (header(0, 1) + kv("k", 9, struct.pack("<IQ", 8, 2) + struct.pack("<Q", 2**40)), "past the end"),
        (header(0, 1) + kv("k", 9, struct.pack("<IQ", 9, 1) * 9), "nests"),
        (header(0, 1) + kv("general.alignment", 4, struct.pack("<I", 48)), "power of two"),
        (header(0, 1) + kv("general.alignment", 6, struct.pack("<f", 32.0)), "power of two"),
        (header(1, 0) + tensor_entry("w", [32, 2, 2, 2, 2], 0), "5 dimensions"),
        (header(1, 0) + tensor_entry("w", [32], 31), "ggml type 31"),
        (header(1, 0) + tensor_entry("w", [33], 8), "rows of 33"),
        (header(1, 0) + tensor_entry("w", [32], 0, offset=4) + b"\0" * 256, "not aligned"),
        (header(1, 0) + tensor_entry("w", [2**40], 0), "ends at byte"),
        (header(1, 0) + tensor_entry("w", [2**63, 2**63, 2**63, 2**63], 0), "ends at byte"),
        (header(1, 0) + gguf_string("w") + struct.pack("<I", 1), "truncated"),
    ],
)
def test_hostile_headers_are_facts(blob: bytes, says: str) -> None:
    facts = inspect(blob)
    assert facts.error is not None and says in facts.error, facts.error
    assert facts.params == 0 and facts.dtypes == {}


def test_a_truncated_download_is_caught() -> None:
    facts = inspect(gguf_file(wan_dit(), cut_data=100))
    assert facts.error is not None and "truncated" in facts.error


def test_reading_is_bounded_in_memory_and_items(tmp_path: Path) -> None:
    """100,000 tensors with 64 KiB names, or ten million empty strings, stop at the bounds, cheaply."""
    import tracemalloc

    names = header(ck.MAX_GGUF_TENSORS, 0) + tensor_entry("x" * 65_000, [32], 0) * 200
    strings = header(0, 1) + kv("t", 9, struct.pack("<IQ", 8, 10**7) + struct.pack("<Q", 0) * 100_000)
    for blob, says in ((names, "MiB limit"), (strings, "metadata values")):
        path = tmp_path / "hostile.gguf"
        path.write_bytes(blob)
        tracemalloc.start()
        facts = ck.file_facts(path, "hostile.gguf", [ck.HEADER_BUDGET_BYTES])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert facts.error is not None and says in facts.error, facts.error
        assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB"


@given(st.integers(0, len(REAL) - 1))
def test_fuzz_truncation_is_always_caught(cut: int) -> None:
    assert inspect(REAL[:cut]).error is not None


@settings(max_examples=300)
@given(st.integers(0, len(REAL) - 1), st.integers(0, 255))
def test_fuzz_flipped_byte_never_raises(pos: int, value: int) -> None:
    blob = bytearray(REAL)
    blob[pos] = value
    facts = inspect(bytes(blob))
    if facts.error is None:
        assert facts.params == sum(facts.dtypes.values()) and facts.params >= 0


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4), st.integers(0, 4), st.binary(max_size=300))
def test_fuzz_random_tables_never_raise(n_tensors: int, n_keys: int, rest: bytes) -> None:
    facts = inspect(header(n_tensors, n_keys) + rest)
    assert facts.error is not None or facts.params == sum(facts.dtypes.values())
