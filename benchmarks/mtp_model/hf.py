"""The Hugging Face side (transformers, tokenizers): config.json and the tokenizer files.

Runs where the harness runs (this machine), not on the GPU machine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from model import Config

REPO = Path(__file__).resolve().parents[2]


def transformers_config(cfg: Config, eos: int) -> Any:
    """``Qwen3_5TextConfig`` for ``cfg`` (architectures: ``Qwen3_5ForCausalLM``, tied embeddings)."""
    from transformers import Qwen3_5TextConfig

    config = Qwen3_5TextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        intermediate_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        linear_num_key_heads=cfg.linear_num_key_heads,
        linear_num_value_heads=cfg.linear_num_value_heads,
        linear_key_head_dim=cfg.linear_key_head_dim,
        linear_value_head_dim=cfg.linear_value_head_dim,
        linear_conv_kernel_dim=cfg.linear_conv_kernel_dim,
        full_attention_interval=cfg.full_attention_interval,
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        mtp_num_hidden_layers=cfg.mtp_num_hidden_layers,
        bos_token_id=eos,
        eos_token_id=eos,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "partial_rotary_factor": cfg.partial_rotary_factor,
            "mrope_section": list(cfg.mrope_section),
            "mrope_interleaved": True,
        },
    )
    config.architectures = ["Qwen3_5ForCausalLM"]
    return config


def write_tokenizer(vocab_gguf: Path, out: Path) -> int:
    """tokenizer.json + tokenizer_config.json from llama.cpp's ``models/ggml-vocab-qwen35.gguf``
    (the tests' rebuild, ``tests/hf_models.py``); returns the EOS token id."""
    sys.path.insert(0, str(REPO))
    from harness.gguf_files.reader import open_gguf
    from tests.hf_models import _write_bpe_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    with open_gguf(vocab_gguf) as gf:
        _write_bpe_tokenizer(gf, out, style="qwen2")
        return int(gf.value("tokenizer.ggml.eos_token_id"))
