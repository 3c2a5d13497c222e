"""Tiny random diffusers Wan pipelines for the tests: no download, built from configs in a second on a CPU.

A word-level tokenizer made in memory and a 2-layer UMT5 stand in for umt5-xxl, so a prompt is a prompt; the
transformer and VAE are ``WanTransformer3DModel`` and ``AutoencoderKLWan`` at toy widths. ``two_experts``
builds Wan2.2's layout: ``transformer`` for the high-noise steps, ``transformer_2`` after the boundary.
"""

from __future__ import annotations

import torch

WORDS = ["<pad>", "</s>", "<unk>", "a", "cat", "surfing", "wave", "at", "sunset", "blurry", "low", "quality"]


def tokenizer():  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def text_encoder(dim: int = 16):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=len(WORDS), d_model=dim, d_kv=4, d_ff=32, num_layers=2, num_heads=2)
    return UMT5EncoderModel(config).eval()


def transformer(text_dim: int = 16, layers: int = 2):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=text_dim, freq_dim=32, ffn_dim=64, num_layers=layers, rope_max_seq_len=32,
    ).eval()  # fmt: skip


def vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    ).eval()  # fmt: skip


def pipeline(two_experts: bool = False):
    """A ``WanPipeline`` (Wan2.1 layout, or Wan2.2's two experts with a boundary at half the steps)."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    extra = {"transformer_2": transformer(), "boundary_ratio": 0.5} if two_experts else {}
    pipe = WanPipeline(
        tokenizer=tokenizer(), text_encoder=text_encoder(), vae=vae(), transformer=transformer(),
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        **extra,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


# what a generation with these takes: 16x16 pixels, 5 frames (2 latent frames)
CALL = {"height": 16, "width": 16, "num_frames": 5, "max_sequence_length": 8, "output_type": "latent"}
