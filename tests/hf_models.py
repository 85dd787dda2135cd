"""Hugging Face checkpoints (config.json, tokenizer, safetensors) for the pipeline's tests.

``smollm2_from_gguf`` rebuilds the HF checkpoint a real GGUF was converted from: SmolLM2-135M
(llama, 30 layers, hidden 576, 9 query heads and 3 KV heads, tied embeddings).  Every tensor
is dequantized with ``gguf.quants.dequantize`` and stored as F32 (the values Q4_1/Q8_0 blocks
hold are exact in F32), the converter's Q/K row permutation for llama is undone, and the
tokenizer is rebuilt from the GGUF's tokens and merges with the ``tokenizers`` library, so
``convert_hf_to_gguf.py`` recognises its pre-tokenizer as ``smollm``.  Quantizing the
converted F32 file back with ``--pure --token-embedding-type q8_0 ... Q4_1`` gives the
original file byte for byte.

``tiny_qwen35_mtp`` builds a ``Qwen3_5ForCausalLM`` (transformers >= 5) with hidden size
256, 4 layers (3 linear-attention + 1 full-attention) and one MTP layer: transformers drops
the ``mtp.*`` weights, so the 15 tensors of the MTP block are added to the safetensors by
hand under the names Qwen3.5 checkpoints use (``mtp.fc``, ``mtp.pre_fc_norm_embedding``,
``mtp.pre_fc_norm_hidden``, ``mtp.norm`` and ``mtp.layers.0.*``, a full-attention decoder
layer).  Its tokenizer is rebuilt from llama.cpp's ``models/ggml-vocab-qwen35.gguf``
(151,936 tokens, a Qwen2 byte-level BPE; the converter labels it ``qwen2``).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from gguf import GGMLQuantizationType, quants

from harness import atomic
from harness.gguf_files.contents import GGUFFile
from harness.gguf_files.reader import open_gguf
from harness.source import sdist_upstream as offline

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types

# GGUF tensor name (inside a block) -> HF name, for llama
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

SMOLLM2_MODEL_ID = "HuggingFaceTB/smollm2-135M-8k-lc100k-mix1-ep2"


# --- SmolLM2 from its GGUF ------------------------------------------------------------------


def dequantize(gf: GGUFFile, name: str) -> np.ndarray:
    """A tensor of ``gf`` as float32 in numpy order (rows first)."""
    info = gf.tensor(name)
    assert info is not None, name
    rows = list(reversed(info.shape))  # numpy order: outermost first
    raw = np.asarray(gf.data(info))
    qtype = GGMLQuantizationType(info.type)
    if qtype == GGMLQuantizationType.F32:
        return raw.view(np.float32).reshape(rows).copy()
    if qtype == GGMLQuantizationType.F16:
        return raw.view(np.float16).astype(np.float32).reshape(rows)
    data = raw.reshape(*rows[:-1], -1)
    out: np.ndarray = quants.dequantize(data, qtype)
    return out.reshape(rows).astype(np.float32, copy=False)


def unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo ``LlamaModel.permute`` of convert_hf_to_gguf (the rotary pairs' row order)."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def smollm2_from_gguf(gguf_path: Path, out: Path) -> Path:
    """Write the HF checkpoint of the SmolLM2 GGUF at ``gguf_path`` into directory ``out``."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    with open_gguf(gguf_path) as gf:
        arch = gf.value("general.architecture")
        assert arch == "llama", arch
        n_layer = int(gf.value("llama.block_count"))
        n_head = int(gf.value("llama.attention.head_count"))
        n_head_kv = int(gf.value("llama.attention.head_count_kv"))
        tensors: dict[str, np.ndarray] = {
            "model.embed_tokens.weight": dequantize(gf, "token_embd.weight"),
            "model.norm.weight": dequantize(gf, "output_norm.weight"),
        }
        assert gf.tensor("output.weight") is None  # tied embeddings
        for il in range(n_layer):
            for short, hf in _LLAMA_BLOCK.items():
                w = dequantize(gf, f"blk.{il}.{short}.weight")
                if short == "attn_q":
                    w = unpermute(w, n_head)
                elif short == "attn_k":
                    w = unpermute(w, n_head_kv)
                tensors[f"model.layers.{il}.{hf}.weight"] = np.ascontiguousarray(w)
        config = {
            "_name_or_path": SMOLLM2_MODEL_ID,
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": int(gf.value("tokenizer.ggml.bos_token_id")),
            "eos_token_id": int(gf.value("tokenizer.ggml.eos_token_id")),
            "pad_token_id": int(gf.value("tokenizer.ggml.padding_token_id")),
            "hidden_act": "silu",
            "hidden_size": int(gf.value("llama.embedding_length")),
            "initializer_range": 0.02,
            "intermediate_size": int(gf.value("llama.feed_forward_length")),
            "max_position_embeddings": int(gf.value("llama.context_length")),
            "mlp_bias": False,
            "num_attention_heads": n_head,
            "num_hidden_layers": n_layer,
            "num_key_value_heads": n_head_kv,
            "pretraining_tp": 1,
            "rms_norm_eps": float(np.float32(gf.value("llama.attention.layer_norm_rms_epsilon"))),
            "rope_scaling": None,
            "rope_theta": float(gf.value("llama.rope.freq_base")),
            "tie_word_embeddings": True,
            "torch_dtype": "float32",
            "use_cache": True,
            "vocab_size": len(gf.value("tokenizer.ggml.tokens")),
        }
        _write_bpe_tokenizer(gf, out, style="smollm")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}) + "\n"
    )
    (out / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- en\n---\n\n# SmolLM2 (rebuilt for tests)\n")
    return out


# --- tokenizers ----------------------------------------------------------------------------


QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _write_bpe_tokenizer(gf: GGUFFile, out: Path, *, style: Literal["smollm", "qwen2"]) -> None:
    """tokenizer.json + tokenizer_config.json for a GGUF's byte-level BPE vocabulary.

    ``smollm``: digits split one by one, then GPT-2's byte-level regex; ``qwen2``: NFC and
    Qwen2's split regex.  transformers 5 builds the pipeline from ``tokenizer_class``, so it is
    named too.  Control tokens become special added tokens; llama.cpp's ``[PAD<n>]`` fillers
    are left out (the converter pads the vocabulary up to config.json's ``vocab_size`` again).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens: list[str] = gf.value("tokenizer.ggml.tokens")
    types: list[int] = gf.value("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in gf.value("tokenizer.ggml.merges")]
    normal = [(t, i) for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k != USER_DEFINED]
    vocab = dict(normal)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    qwen2 = style == "qwen2"
    if qwen2:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types, strict=True) if k == CONTROL]
    tok.add_special_tokens(special)
    tok.save(str(out / "tokenizer.json"))

    def token(key: str) -> str | None:
        tid = gf.value(f"tokenizer.ggml.{key}_token_id")
        return None if tid is None else tokens[int(tid)]

    cfg: dict[str, Any] = {
        "tokenizer_class": "Qwen2Tokenizer" if qwen2 else "GPT2Tokenizer",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768 if qwen2 else 8192,
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "additional_special_tokens": [t.content for t in special],
    }
    template = gf.value("tokenizer.chat_template")
    if template is not None:
        cfg["chat_template"] = template
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


# --- a tiny Qwen3.5 with one MTP layer -------------------------------------------------------

QWEN35_MTP_TENSORS = 15


def tiny_qwen35_mtp(vocab_gguf: Path, out: Path, *, seed: int = 0) -> Path:
    """A 4-layer ``Qwen3_5ForCausalLM`` (hidden 256) plus one MTP layer, in directory ``out``."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    out.mkdir(parents=True, exist_ok=True)
    with open_gguf(vocab_gguf) as gf:
        n_vocab = len(gf.value("tokenizer.ggml.tokens"))
        eos = int(gf.value("tokenizer.ggml.eos_token_id"))
        _write_bpe_tokenizer(gf, out, style="qwen2")
    config = Qwen3_5TextConfig(
        hidden_size=256,
        num_hidden_layers=4,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=32,
        linear_value_head_dim=32,
        linear_conv_kernel_dim=4,
        vocab_size=n_vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        mtp_num_hidden_layers=1,
        bos_token_id=eos,
        eos_token_id=eos,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10_000_000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [3, 3, 2],
            "mrope_interleaved": True,
        },
    )
    config.architectures = ["Qwen3_5ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen3_5ForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    weights = out / "model.safetensors"
    tensors = load_file(str(weights))
    assert not any(name.startswith("mtp.") for name in tensors), "transformers now keeps mtp.*"
    gen = torch.Generator().manual_seed(seed + 1)
    hidden = config.hidden_size
    mtp: dict[str, torch.Tensor] = {
        "mtp.fc.weight": torch.randn(hidden, 2 * hidden, generator=gen) * 0.02,
        "mtp.pre_fc_norm_embedding.weight": torch.zeros(hidden),
        "mtp.pre_fc_norm_hidden.weight": torch.zeros(hidden),
        "mtp.norm.weight": torch.zeros(hidden),
    }
    full = next(i for i, kind in enumerate(config.layer_types) if kind == "full_attention")
    prefix = f"model.layers.{full}."
    for name, tensor in tensors.items():  # the MTP layer is a full-attention decoder layer
        if name.startswith(prefix):
            mtp["mtp.layers.0." + name[len(prefix) :]] = tensor.clone() + torch.randn(tensor.shape, generator=gen) * 0.01
    assert len(mtp) == QWEN35_MTP_TENSORS, sorted(mtp)
    save_file({**tensors, **mtp}, str(weights), metadata={"format": "pt"})
    return out


# --- a tiny Gemma 4 and its assistant --------------------------------------------------------

GEMMA4_TARGET = {"hidden": 64, "layers": ["sliding_attention"] * 3 + ["full_attention"], "ff": 128}
GEMMA4_ASSISTANT = {"hidden": 32, "layers": ["sliding_attention", "full_attention"], "ff": 64}
GEMMA4_HEADS, GEMMA4_KV_HEADS, GEMMA4_HEAD_SWA, GEMMA4_HEAD_FULL = 2, 1, 32, 64
GEMMA4_ROPE = {
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
}


def _write_gemma4_tokenizer(gf: GGUFFile, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json for Gemma 4's vocabulary (a BPE with byte fallback).

    Spaces are ``▁`` (a normalizer replaces them), bytes without a token fall back to ``<0xNN>``,
    and the decoder undoes both: the shape ``gguf.LlamaHfVocab`` (Gemma4Model.set_vocab) accepts.
    Control tokens become special added tokens at their own ids; the converter itself marks
    Gemma 4's visible tool/channel tokens user-defined again.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    tokens: list[str] = gf.value("tokenizer.ggml.tokens")
    types: list[int] = gf.value("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in gf.value("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    unk = tokens[int(gf.value("tokenizer.ggml.unknown_token_id"))]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types, strict=True) if k == CONTROL]
    tok.add_special_tokens(special)
    tok.save(str(out / "tokenizer.json"))

    def token(key: str) -> str:
        return tokens[int(gf.value(f"tokenizer.ggml.{key}_token_id"))]

    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": unk,
        "pad_token": token("padding"),
        "mask_token": token("mask"),
    }
    template = gf.value("tokenizer.chat_template")
    if template is not None:
        cfg["chat_template"] = template
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def _gemma4_config(gf: GGUFFile, shape: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": shape["hidden"],
        "intermediate_size": shape["ff"],
        "num_hidden_layers": len(shape["layers"]),
        "layer_types": shape["layers"],
        "num_attention_heads": GEMMA4_HEADS,
        "num_key_value_heads": GEMMA4_KV_HEADS,
        "num_global_key_value_heads": GEMMA4_KV_HEADS,
        "head_dim": GEMMA4_HEAD_SWA,
        "global_head_dim": GEMMA4_HEAD_FULL,
        "hidden_size_per_layer_input": 0,
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": 512,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_parameters": GEMMA4_ROPE,
        "final_logit_softcapping": 30.0,
        "attention_k_eq_v": False,
        "enable_moe_block": False,  # dense: Gemma 4's dense configs name the MoE sizes as null
        "moe_intermediate_size": None,
        "num_experts": None,
        "tie_word_embeddings": True,
        "vocab_size": len(gf.value("tokenizer.ggml.tokens")),
        "bos_token_id": int(gf.value("tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(gf.value("tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(gf.value("tokenizer.ggml.padding_token_id")),
        "torch_dtype": "float32",
        **extra,
    }


def _gemma4_layers(shape: dict[str, Any], rng: np.random.Generator, *, kv: bool) -> dict[str, np.ndarray]:
    """Decoder layers under Gemma 4's names (``self_attn.*``, ``mlp.*``, four norms, ``layer_scalar``);
    ``kv=False``: the assistant's, which only has queries (it attends to the target's KV cache)."""
    n, ff = shape["hidden"], shape["ff"]
    t: dict[str, np.ndarray] = {}

    def w(*dims: int) -> np.ndarray:
        return rng.normal(0, 0.05, size=dims).astype(np.float32)

    def norm(dim: int) -> np.ndarray:
        return (1 + rng.normal(0, 0.01, size=dim)).astype(np.float32)  # Gemma 4's RMSNorm: weight as is

    for i, kind in enumerate(shape["layers"]):
        hd = GEMMA4_HEAD_FULL if kind == "full_attention" else GEMMA4_HEAD_SWA
        p = f"model.layers.{i}."
        t |= {p + "input_layernorm.weight": norm(n), p + "post_attention_layernorm.weight": norm(n),
              p + "pre_feedforward_layernorm.weight": norm(n), p + "post_feedforward_layernorm.weight": norm(n),
              p + "self_attn.q_proj.weight": w(GEMMA4_HEADS * hd, n), p + "self_attn.q_norm.weight": norm(hd),
              p + "self_attn.o_proj.weight": w(n, GEMMA4_HEADS * hd),
              p + "mlp.gate_proj.weight": w(ff, n), p + "mlp.up_proj.weight": w(ff, n), p + "mlp.down_proj.weight": w(n, ff),
              p + "layer_scalar": np.array([0.5], dtype=np.float32)}  # fmt: skip
        if kv:
            t |= {p + "self_attn.k_proj.weight": w(GEMMA4_KV_HEADS * hd, n),
                  p + "self_attn.v_proj.weight": w(GEMMA4_KV_HEADS * hd, n), p + "self_attn.k_norm.weight": norm(hd)}  # fmt: skip
    return t


def _write_gemma4(vocab_gguf: Path, out: Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    with open_gguf(vocab_gguf) as gf:
        _write_gemma4_tokenizer(gf, out)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (out / "generation_config.json").write_text(json.dumps(gen) + "\n")
    return out


def tiny_gemma4(vocab_gguf: Path, out: Path, *, seed: int = 0) -> Path:
    """A 4-layer ``Gemma4ForCausalLM`` (hidden 64; 3 sliding-window layers with head size 32, then one
    full-attention layer with head size 64 and proportional RoPE) with Gemma 4's real tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    shape = GEMMA4_TARGET
    rng = np.random.default_rng(seed)
    with open_gguf(vocab_gguf) as gf:
        config = _gemma4_config(gf, shape, architectures=["Gemma4ForCausalLM"], model_type="gemma4_text",
                                num_kv_shared_layers=0)  # fmt: skip
    tensors = {
        "model.embed_tokens.weight": rng.normal(0, 0.05, size=(config["vocab_size"], shape["hidden"])).astype(np.float16),
        "model.norm.weight": np.ones(shape["hidden"], dtype=np.float32),
        **_gemma4_layers(shape, rng, kv=True),
    }
    return _write_gemma4(vocab_gguf, out, config, tensors)


def tiny_gemma4_assistant(vocab_gguf: Path, out: Path, *, seed: int = 1) -> Path:
    """The ``Gemma4AssistantForCausalLM`` of :func:`tiny_gemma4`: hidden 32, two query-only layers (sliding,
    full; llama.cpp gives them the target's last sliding and last full KV cache), ``pre_projection``
    from [target embedding, target hidden] (2 x 64) to 32 and ``post_projection`` back to 64."""
    out.mkdir(parents=True, exist_ok=True)
    shape, backbone = GEMMA4_ASSISTANT, GEMMA4_TARGET["hidden"]
    rng = np.random.default_rng(seed)
    with open_gguf(vocab_gguf) as gf:
        config = _gemma4_config(gf, shape, architectures=["Gemma4AssistantForCausalLM"], model_type="gemma4_assistant",
                                backbone_hidden_size=backbone, num_kv_shared_layers=len(shape["layers"]))  # fmt: skip
    n = shape["hidden"]
    tensors = {
        "model.embed_tokens.weight": rng.normal(0, 0.05, size=(config["vocab_size"], n)).astype(np.float16),
        "model.norm.weight": np.ones(n, dtype=np.float32),
        "pre_projection.weight": rng.normal(0, 0.05, size=(n, 2 * backbone)).astype(np.float32),
        "post_projection.weight": rng.normal(0, 0.05, size=(backbone, n)).astype(np.float32),
        **_gemma4_layers(shape, rng, kv=False),
    }
    return _write_gemma4(vocab_gguf, out, config, tensors)


def sdist_vocab(test_cache: Path, name: str, override: str) -> Path:
    """llama.cpp's ``models/<name>`` from the session's llama-cpp-python sdist (its tree is 0c1e570),
    extracted once into the test cache; ``$<override>`` names another file instead."""
    if os.environ.get(override):
        return Path(os.environ[override])
    target = test_cache / "models" / name
    if not target.exists():
        with tarfile.open(offline.sdist(test_cache / "sdist")) as tar:
            member = next(m for m in tar if m.name.endswith(f"/vendor/llama.cpp/models/{name}"))
            source = tar.extractfile(member)
            assert source is not None
            with atomic.temp_file_beside(target) as tmp:
                tmp.write_bytes(source.read())
    return target
