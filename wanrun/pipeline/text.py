"""A deterministic toy text encoder standing in for umt5-xxl: same output contract, a tiny fraction of the cost.

Words are hashed to token ids (stable across processes and machines), embedded and passed through two small
pre-norm transformer layers, then projected to the DiT's text width. Like Wan's T5 output, positions past the
prompt are zeros, padded to the preset's text length. It works at a narrow width internally so the 4096-wide
output of the wan-1.3b preset stays cheap.
"""

from __future__ import annotations

import hashlib
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from wanrun.pipeline.config import PresetSpec
from wanrun.pipeline.model import materialize

VOCAB = 4096
BOS = 1  # every prompt starts with it, so an empty negative prompt still has one token to attend to
TEXT_SEED = 7
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(prompt: str, text_len: int, vocab: int = VOCAB) -> list[int]:
    """BOS plus one id per word or punctuation mark (lower-cased, blake2b-hashed), cut to `text_len`."""
    ids = [BOS]
    for word in _WORD_RE.findall(prompt.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        ids.append(2 + int.from_bytes(digest, "little") % (vocab - 2))
    return ids[:text_len]


class EncoderLayer(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.o = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in self.qkv(self.norm1(x)).chunk(3, -1))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        x = x + self.o(attn.transpose(1, 2).flatten(2))
        return x + self.ffn(self.norm2(x))


class ToyTextEncoder(nn.Module):
    """Token ids (B, text_len) and a keep mask -> (B, text_len, out_dim) embeddings, zero past each prompt."""

    def __init__(self, out_dim: int, text_len: int, width: int = 256, num_heads: int = 4, num_layers: int = 2) -> None:
        super().__init__()
        width = min(width, out_dim)
        self.text_len = text_len
        self.token_embedding = nn.Embedding(VOCAB, width)
        self.pos_embedding = nn.Parameter(torch.zeros(text_len, width))
        self.layers = nn.ModuleList(EncoderLayer(width, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.pos_embedding
        for layer in self.layers:
            x = layer(x, keep)
        return self.proj(self.norm(x)) * keep[..., None]


def _init_std(name: str, param: nn.Parameter) -> float:
    if name == "token_embedding.weight":
        return 1.0
    if name == "pos_embedding":
        return 0.02
    return 1.0 / math.sqrt(param[0].numel())


def build_text_encoder(spec: PresetSpec, device: torch.device) -> ToyTextEncoder:
    """The encoder for a preset, fp32 on `device`, with fixed weights."""
    return materialize(
        lambda: ToyTextEncoder(spec.text_dim, spec.text_len), device, TEXT_SEED, lambda _: torch.float32, _init_std
    )


def encode_prompts(encoder: ToyTextEncoder, prompts: list[str], device: torch.device) -> torch.Tensor:
    """(len(prompts), text_len, text_dim) fp32 on `device`; the token ids cross to the device once, here."""
    ids = torch.zeros(len(prompts), encoder.text_len, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tokens = tokenize(prompt, encoder.text_len)
        ids[row, : len(tokens)] = torch.tensor(tokens)
    ids = ids.to(device)
    return encoder(ids, ids != 0)
