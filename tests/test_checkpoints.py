"""The checkpoint probe: real safetensors files in the Wan layouts, and hostile or truncated ones."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as save_numpy
from safetensors.numpy import save_file as save_numpy_file

from wandoc.probes import checkpoints as ck

T5 = "models_t5_umt5-xxl-enc-bf16.pth"


def dit_tensors(dtype: type = np.float32, blocks: int = 2, dim: int = 16) -> dict[str, np.ndarray]:
    """A miniature DiT: per block attention and FFN weights, plus norms."""
    tensors: dict[str, np.ndarray] = {}
    for b in range(blocks):
        for name in ("q", "k", "v", "o"):
            tensors[f"blocks.{b}.self_attn.{name}.weight"] = np.ones((dim, dim), dtype=dtype)
        tensors[f"blocks.{b}.ffn.0.weight"] = np.ones((dim * 2, dim), dtype=dtype)
        tensors[f"blocks.{b}.norm3.weight"] = np.ones((dim,), dtype=dtype)
    return tensors


def params_of(tensors: dict[str, object]) -> int:
    return sum(int(np.prod(t.shape)) for t in tensors.values())  # type: ignore[attr-defined]


def write_pickle_like(path: Path, size: int) -> None:
    """.pth files are only listed, never opened as pickles; their content does not matter here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04" + b"\0" * (size - 4))


@pytest.fixture
def a14b(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Wan2.2 T2V-A14B: two fp32 experts in two shards each, T5 and the VAE beside them."""
    root = tmp_path / "Wan2.2-T2V-A14B"
    sizes: dict[str, int] = {}
    for expert, blocks in (("high_noise_model", 3), ("low_noise_model", 3)):
        folder = root / expert
        folder.mkdir(parents=True)
        tensors = dit_tensors(blocks=blocks)
        names = sorted(tensors)
        halves = [dict.fromkeys(names[: len(names) // 2]), dict.fromkeys(names[len(names) // 2 :])]
        for i, half in enumerate(halves, start=1):
            path = folder / f"diffusion_pytorch_model-0000{i}-of-00002.safetensors"
            save_numpy_file({k: tensors[k] for k in half}, str(path))
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text("{}", encoding="utf-8")
        (folder / "config.json").write_text("{}", encoding="utf-8")
        sizes[expert] = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        sizes[f"{expert}.params"] = params_of(tensors)
    write_pickle_like(root / T5, 4096)
    write_pickle_like(root / "Wan2.1_VAE.pth", 2048)
    (root / "google" / "umt5-xxl").mkdir(parents=True)
    (root / "google" / "umt5-xxl" / "tokenizer.json").write_text("{}", encoding="utf-8")
    return root, sizes


@pytest.fixture
def bf16_1_3b(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Wan2.1 T2V-1.3B converted to bf16: one DiT file whose norms stayed fp32."""
    import torch  # only the test writes bf16; the probe never imports torch
    from safetensors.torch import save_file

    root = tmp_path / "Wan2.1-T2V-1.3B-bf16"
    root.mkdir()
    tensors = {k: torch.from_numpy(v) for k, v in dit_tensors(blocks=2).items()}
    mixed = {k: v if "norm" in k else v.to(torch.bfloat16) for k, v in tensors.items()}
    save_file(mixed, str(root / "diffusion_pytorch_model.safetensors"))
    write_pickle_like(root / T5, 4096)
    write_pickle_like(root / "Wan2.1_VAE.pth", 2048)
    norms = sum(v.numel() for k, v in mixed.items() if "norm" in k)
    return root, {"params": sum(v.numel() for v in mixed.values()), "norms": norms}


# -- layouts ----------------------------------------------------------------------------------------------


def test_a14b_layout(a14b: tuple[Path, dict[str, int]]) -> None:
    root, sizes = a14b
    facts = ck.probe_checkpoints(root)
    assert facts.given and facts.found and facts.error is None
    assert [f.path for f in facts.files] == [
        "Wan2.1_VAE.pth",
        "high_noise_model/diffusion_pytorch_model-00001-of-00002.safetensors",
        "high_noise_model/diffusion_pytorch_model-00002-of-00002.safetensors",
        "low_noise_model/diffusion_pytorch_model-00001-of-00002.safetensors",
        "low_noise_model/diffusion_pytorch_model-00002-of-00002.safetensors",
        T5,
    ]
    models = {m.role: m for m in facts.models}
    assert set(models) == {"high_noise_model", "low_noise_model", "t5", "vae"}
    high = models["high_noise_model"]
    assert (high.folder, high.files, high.main_dtype) == ("high_noise_model", 2, "F32")
    assert high.params == sizes["high_noise_model.params"] and high.dtypes == {"F32": high.params}
    assert high.bytes == sizes["high_noise_model"]
    assert models["t5"].folder == T5 and models["t5"].main_dtype == "BF16" and models["t5"].params == 0
    assert models["vae"].folder == "Wan2.1_VAE.pth" and models["vae"].bytes == 2048 and models["vae"].dtypes == {}
    assert facts.dit_experts == 2
    assert facts.dit_params == sizes["high_noise_model.params"]
    assert facts.dit_main_dtype == "F32"
    assert facts.dit_bytes_on_disk == sizes["high_noise_model"]
    for f in facts.files:
        if f.format == "safetensors":
            assert f.error is None and f.params > 0 and f.dtypes == {"F32": f.params}
            assert f.bytes == (root / f.path).stat().st_size


def test_bf16_1_3b_layout(bf16_1_3b: tuple[Path, dict[str, int]]) -> None:
    root, info = bf16_1_3b
    facts = ck.probe_checkpoints(root)
    dit = next(m for m in facts.models if m.role == "dit")
    assert dit.folder == "diffusion_pytorch_model.safetensors"  # the folder also holds T5 and the VAE
    assert dit.dtypes == {"BF16": info["params"] - info["norms"], "F32": info["norms"]}
    assert (facts.dit_experts, facts.dit_params, facts.dit_main_dtype) == (1, info["params"], "BF16")
    assert facts.dit_bytes_on_disk == (root / "diffusion_pytorch_model.safetensors").stat().st_size
    assert sorted(m.role for m in facts.models) == ["dit", "t5", "vae"]


def test_top_level_shards_form_one_model(tmp_path: Path) -> None:
    tensors = dit_tensors(blocks=3)
    names = sorted(tensors)
    for i in range(3):
        part = {k: tensors[k] for k in names[i::3]}
        save_numpy_file(part, str(tmp_path / f"diffusion_pytorch_model-0000{i + 1}-of-00003.safetensors"))
    write_pickle_like(tmp_path / T5, 1024)
    facts = ck.probe_checkpoints(tmp_path)
    dit = next(m for m in facts.models if m.role == "dit")
    assert (dit.folder, dit.files, dit.params) == ("diffusion_pytorch_model-*.safetensors", 3, params_of(tensors))
    assert (facts.dit_experts, facts.dit_params) == (1, params_of(tensors))


def test_diffusers_layout_names_the_experts(tmp_path: Path) -> None:
    for folder in ("transformer", "transformer_2", "vae", "text_encoder"):
        (tmp_path / folder).mkdir()
        save_numpy_file(dit_tensors(np.float16, blocks=1), str(tmp_path / folder / "model.safetensors"))
    facts = ck.probe_checkpoints(tmp_path)
    roles = {m.folder: m.role for m in facts.models}
    assert roles == {
        "transformer": "high_noise_model",
        "transformer_2": "low_noise_model",
        "vae": "vae",
        "text_encoder": "t5",
    }
    assert (facts.dit_experts, facts.dit_main_dtype) == (2, "F16")


def test_fp8_single_file_and_gguf(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    weights = {"blocks.0.ffn.0.weight": torch.zeros(8, 4).to(torch.float8_e4m3fn), "scale": torch.ones(1)}
    save_file(weights, str(folder / "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"))
    (folder / "wan2.1-t2v-14b-Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    facts = ck.probe_checkpoints(tmp_path)
    fp8, gguf = sorted(facts.files, key=lambda f: f.format != "safetensors")
    assert fp8.dtypes == {"F8_E4M3": 32, "F32": 1} and fp8.params == 33
    # 60 zero bytes after the magic are no GGUF header: a fact (tests/test_checkpoints_gguf.py reads real ones)
    assert (gguf.format, gguf.params, gguf.dtypes, gguf.bytes) == ("gguf", 0, {}, 64)
    assert gguf.error is not None and "version 0" in gguf.error
    assert {m.role for m in facts.models} == {"high_noise_model", "dit"}
    assert facts.dit_experts == 1 and facts.dit_main_dtype == "F8_E4M3"


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("high_noise_model/diffusion_pytorch_model-00001-of-00006.safetensors", "high_noise_model"),
        ("low_noise_model/diffusion_pytorch_model.safetensors", "low_noise_model"),
        ("diffusion_pytorch_model-00002-of-00003.safetensors", "dit"),
        (T5, "t5"),
        ("Wan2.2_VAE.pth", "vae"),
        ("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", "other"),
        ("vae/diffusion_pytorch_model.safetensors", "vae"),
        ("text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "t5"),
        ("diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors", "low_noise_model"),
        ("diffusion_models/Wan2_1-T2V-14B_fp8_e4m3fn.safetensors", "dit"),
        ("loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", "other"),
        ("Wan2.1-T2V-14B-Q8_0.gguf", "dit"),
        ("wav2vec2-large-xlsr-53-english/model.safetensors", "other"),
        ("misc/model.safetensors", "other"),
    ],
)
def test_role_for(path: str, role: str) -> None:
    assert ck.role_for(PurePosixPath(path)) == role


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        (T5, "BF16"),
        ("wan2.1_t2v_1.3B_fp16.safetensors", "F16"),
        ("Wan2_1-T2V-14B_fp8_e4m3fn.safetensors", "F8_E4M3"),
        ("wan_14B_fp8_e5m2.safetensors", "F8_E5M2"),
        ("model-fp32.pth", "F32"),
        ("Wan2.1-T2V-14B-Q5_K_M.gguf", "Q5_K_M"),
        ("Wan2.1_VAE.pth", ""),
        ("diffusion_pytorch_model.bin", ""),
    ],
)
def test_name_dtype_hint(name: str, dtype: str) -> None:
    assert ck.name_dtype_hint(name) == dtype


# -- the probe's own edges --------------------------------------------------------------------------------


def test_not_given_missing_and_file(tmp_path: Path) -> None:
    assert ck.probe_checkpoints(None).given is False
    missing = ck.probe_checkpoints(tmp_path / "nope")
    assert missing.given and not missing.found and "does not exist" in (missing.error or "")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    not_folder = ck.probe_checkpoints(tmp_path / "notes.txt")
    assert not not_folder.found and "not a folder" in (not_folder.error or "")
    empty = ck.probe_checkpoints(tmp_path)
    assert empty.found and empty.files == [] and "no weight files" in (empty.error or "")
    single = tmp_path / "wan2.1_t2v_1.3B_fp32.safetensors"
    save_numpy_file(dit_tensors(), str(single))
    one = ck.probe_checkpoints(single)
    assert one.found and [f.path for f in one.files] == [single.name] and one.dit_params == params_of(dit_tensors())


def test_walk_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    save_numpy_file(dit_tensors(), str(deep / "ok.safetensors"))
    (deep / "d").mkdir()
    save_numpy_file(dit_tensors(), str(deep / "d" / "too_deep.safetensors"))
    (tmp_path / ".cache").mkdir()
    save_numpy_file(dit_tensors(), str(tmp_path / ".cache" / "hidden.safetensors"))
    (tmp_path / "a" / "loop").symlink_to(tmp_path)  # a folder that contains itself
    facts = ck.probe_checkpoints(tmp_path)
    assert [f.path for f in facts.files] == ["a/b/c/ok.safetensors"] and facts.error is None

    monkeypatch.setattr(ck, "MAX_ENTRIES", 20)
    for i in range(30):
        (tmp_path / f"photo{i:02d}.jpg").write_bytes(b"")
    capped = ck.probe_checkpoints(tmp_path)
    assert "stopped after 20" in (capped.error or "")


def test_symlinked_files_are_followed(tmp_path: Path) -> None:
    """The Hugging Face cache keeps weights as blobs with symlinks under snapshots/."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    save_numpy_file(dit_tensors(), str(blobs / "abc123"))
    snap = tmp_path / "snapshots" / "rev"
    snap.mkdir(parents=True)
    (snap / "diffusion_pytorch_model.safetensors").symlink_to(blobs / "abc123")
    facts = ck.probe_checkpoints(snap)
    assert facts.dit_params == params_of(dit_tensors()) and facts.files[0].error is None


def test_header_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        save_numpy_file(dit_tensors(), str(tmp_path / f"diffusion_pytorch_model-0000{i + 1}-of-00003.safetensors"))
    monkeypatch.setattr(ck, "HEADER_BUDGET_BYTES", 1)
    facts = ck.probe_checkpoints(tmp_path)
    assert facts.files[0].error is None and facts.files[0].params > 0
    assert all("budget" in (f.error or "") for f in facts.files[1:])


# -- hostile and truncated headers ------------------------------------------------------------------------


def raw_file(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    body = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(body) if length is None else length) + body + data


def inspect_bytes(blob: bytes) -> ck.CheckpointFile:
    return ck.inspect_safetensors(io.BytesIO(blob), len(blob), "x.safetensors")


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (b"", "too short"),
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 2**63), "limit"),
        (struct.pack("<Q", ck.MAX_HEADER_BYTES + 1) + b"{}", "limit"),
        (raw_file(GOOD, length=10_000), "past the end"),
        (raw_file(b"\xff\xfe{}"), "not JSON"),
        (raw_file(b'{"a": '), "not JSON"),
        (raw_file(b"[" * 100_000 + b"]" * 100_000), "not JSON"),
        (raw_file([1, 2]), "not an object"),
        (raw_file({"w": 3}), "not an object"),
        (raw_file({"__metadata__": [1]}), "__metadata__"),
        (raw_file({"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "dtype"),
        (raw_file({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
        (raw_file({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
        (raw_file({"w": {"dtype": "F32", "shape": "2x2", "data_offsets": [0, 16]}}, b"\0" * 16), "shape"),
        (raw_file({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4), "data_offsets"),
        (raw_file({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\0" * 4), "data_offsets"),
        (raw_file({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "data_offsets"),
        (raw_file(GOOD, b"\0" * 8), "truncated"),
        (raw_file({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, b"\0" * 16), "8 bytes for 4"),
        (raw_file({"w": {"dtype": "BF16", "shape": [10**30], "data_offsets": [0, 4]}}, b"\0" * 4), "bytes for"),
    ],
)
def test_bad_headers_are_facts(blob: bytes, says: str) -> None:
    facts = inspect_bytes(blob)
    assert facts.error is not None and says in facts.error, facts.error
    assert facts.params == 0 and facts.dtypes == {}


def test_unknown_dtype_and_metadata_are_accepted() -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F4", "shape": [3, 5], "data_offsets": [0, 8]},
        "b": {"dtype": "I64", "shape": [], "data_offsets": [8, 16]},
    }
    facts = inspect_bytes(raw_file(header, b"\0" * 16))
    assert facts.error is None and facts.params == 16 and facts.dtypes == {"F4": 15, "I64": 1}


def test_truncated_real_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_numpy_file(dit_tensors(), str(path))
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 100)
    facts = ck.probe_checkpoints(tmp_path)
    assert "truncated" in (facts.files[0].error or "")
    assert facts.dit_params == 0 and facts.models[0].role == "dit"


REAL = save_numpy(dit_tensors(np.float16, blocks=1, dim=4))


@given(st.binary(max_size=200))
def test_fuzz_random_bytes(blob: bytes) -> None:
    facts = inspect_bytes(blob)
    assert facts.error is not None or facts.params >= 0


@given(st.integers(0, len(REAL) - 1))
def test_fuzz_truncation_is_always_caught(cut: int) -> None:
    assert inspect_bytes(REAL[:cut]).error is not None


@given(st.integers(0, len(REAL) - 1), st.integers(0, 255))
def test_fuzz_flipped_byte_never_raises(pos: int, value: int) -> None:
    blob = bytearray(REAL)
    blob[pos] = value
    facts = inspect_bytes(bytes(blob))
    assert facts.error is not None or facts.params == params_of(dit_tensors(np.float16, blocks=1, dim=4))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
tensor_entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "BF16", "F8_E4M3", "X"]) | json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.text(max_size=8), tensor_entries | json_values, max_size=5),
    st.integers(0, 64),
    st.none() | st.integers(0, 2**64 - 1),
)
def test_fuzz_structured_headers(header: dict[str, object], data_len: int, length: int | None) -> None:
    blob = raw_file(header, b"\0" * data_len, length)
    facts = inspect_bytes(blob)
    if facts.error is None:
        assert facts.params == sum(facts.dtypes.values())


def test_fuzzed_files_on_disk_never_raise(tmp_path: Path) -> None:
    """The whole probe over a folder of damaged files: every file gets an error, the probe returns."""
    blobs = [b"", b"\0" * 7, struct.pack("<Q", 2**40), REAL[:-1], REAL[:9], raw_file([]), os.urandom(64)]
    for i, blob in enumerate(blobs):
        (tmp_path / f"diffusion_pytorch_model-0000{i}-of-00009.safetensors").write_bytes(blob)
    facts = ck.probe_checkpoints(tmp_path)
    assert len(facts.files) == len(blobs) and all(f.error for f in facts.files)
    assert facts.error is None and facts.dit_params == 0


def test_a_huge_header_is_refused_before_it_is_read_and_the_largest_allowed_stays_cheap(tmp_path: Path) -> None:
    """A 100 MB header once took 2.65 GB to parse; now headers past the bound are not read at all, and the
    largest one allowed (a real shard's is far smaller) costs a bounded amount of memory."""
    import tracemalloc

    huge = tmp_path / "huge.safetensors"
    with open(huge, "wb") as f:
        f.write(struct.pack("<Q", 100_000_000))
        f.truncate(100_000_000 + 8 + 16)  # sparse: the file is as long as the header claims
    tracemalloc.start()
    facts = ck.file_facts(huge, "huge.safetensors", [ck.HEADER_BUDGET_BYTES])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert facts.error is not None and "limit: not read" in facts.error and facts.params == 0
    assert peak < 1 << 20
    # the sane twin: a header just under the bound, many small tensors, is read and summarised
    n = 0
    tensors: dict[str, object] = {}
    while True:
        entry = {"dtype": "BF16", "shape": [4], "data_offsets": [8 * n, 8 * n + 8]}
        tensors[f"blocks.{n}.weight"] = entry
        n += 1
        if n % 1000 == 0 and len(json.dumps(tensors)) > ck.MAX_HEADER_BYTES - 100_000:
            break
    big = tmp_path / "big.safetensors"
    big.write_bytes(raw_file(tensors) + b"\0" * (8 * n))
    tracemalloc.start()
    facts = ck.file_facts(big, "big.safetensors", [ck.HEADER_BUDGET_BYTES])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert facts.error is None and facts.params == 4 * n and facts.dtypes == {"BF16": 4 * n}
    assert peak < 200 << 20, f"{peak / 2**20:.0f} MiB to read an {ck.MAX_HEADER_BYTES >> 20} MiB header"
