"""Tiny GGUFs of two more MTP architectures, with the tensor names their loaders create at 0c1e570.

``write_deepseek4``: DeepSeek V4 (``src/models/deepseek4.cpp``), the architecture whose MTP
blocks are built by the trunk's own loop: 3 trunk blocks + 1 MTP block, hidden 64, 4
experts.  Its blocks differ from layer to layer as in the real model: block 0 is hash-routed
(``ffn_gate_tid2eid`` instead of ``exp_probs_b``), ``attention.compress_ratios`` is
``[0, 4, 128, 0]`` (block 1 has the attention compressor and the indexer, block 2 the
compressor only), and the MTP block mirrors the MoE trunk blocks plus ``nextn.*``.

``write_gemma4_assistant``: a Gemma 4 style assistant (``src/models/gemma4-assistant.cpp``):
every block is an MTP block (``block_count`` = ``nextn_predict_layers``), hidden 64, and
``embedding_length_out`` carries the target's hidden width; ``write_gemma4_target`` a minimal
``gemma4`` file for ``audit --target`` (its hidden width and vocabulary are what is compared).

Weights are small random F32/F16 values: these files are for the GGUF tools, not for decoding.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter

U32, F32V, ARR, STR, I32 = (GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.ARRAY,
                            GGUFValueType.STRING, GGUFValueType.INT32)  # fmt: skip


def _tokenizer(n: int) -> list[tuple[str, GGUFValueType, Any, GGUFValueType | None]]:
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *[f"t{i}" for i in range(n - 5)]]
    return [
        ("tokenizer.ggml.model", STR, "gpt2", None),
        ("tokenizer.ggml.pre", STR, "default", None),
        ("tokenizer.ggml.tokens", ARR, tokens, STR),
        ("tokenizer.ggml.token_type", ARR, [3] * 5 + [1] * (n - 5), I32),
        ("tokenizer.ggml.merges", ARR, ["t 1"], STR),
        ("tokenizer.ggml.bos_token_id", U32, 2, None),
        ("tokenizer.ggml.eos_token_id", U32, 1, None),
    ]


def _write(path: Path, arch: str, kvs: list[tuple[str, GGUFValueType, Any, GGUFValueType | None]],
           tensors: dict[str, tuple[int, ...]], omit: Collection[str], seed: int) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(path, arch)
    for key, vtype, value, sub in kvs:
        writer.add_key_value(key, value, vtype, sub)
    for name, shape in tensors.items():  # shape in ggml order (ne0 first), as llama.cpp's loader states it
        if name in omit:
            continue
        data = rng.normal(0, 0.02, size=tuple(reversed(shape))).astype(np.float32)
        writer.add_tensor(name, data if len(shape) == 1 else data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_deepseek4(path: Path, *, mtp: str = "full", omit: Collection[str] = (), seed: int = 0) -> Path:
    """``mtp``: full (block 3 is the MTP block) | dropped (nextn promises it, no blk.3 tensor)."""
    a, n_embd, n_vocab, n_expert, n_ff, hc = "deepseek4", 64, 128, 4, 32, 2
    n_head, head, q_rank, o_groups, o_rank, idx_heads, idx_dim = 2, 32, 32, 2, 16, 2, 32
    ratios, hash_layers, trunk = [0, 4, 128, 0], 1, 3
    hc_dim, hc_mix = hc * n_embd, (2 + hc) * hc
    kvs: list[tuple[str, GGUFValueType, Any, GGUFValueType | None]] = [
        ("general.name", STR, "tiny-deepseek4", None),
        (f"{a}.block_count", U32, trunk + 1, None),
        (f"{a}.nextn_predict_layers", U32, 1, None),
        (f"{a}.context_length", U32, 4096, None),
        (f"{a}.embedding_length", U32, n_embd, None),
        (f"{a}.feed_forward_length", U32, n_ff, None),
        (f"{a}.expert_feed_forward_length", U32, n_ff, None),
        (f"{a}.expert_count", U32, n_expert, None),
        (f"{a}.expert_used_count", U32, 2, None),
        (f"{a}.expert_shared_count", U32, 1, None),
        (f"{a}.attention.head_count", U32, n_head, None),
        (f"{a}.attention.head_count_kv", U32, 1, None),
        (f"{a}.attention.key_length", U32, head, None),
        (f"{a}.attention.value_length", U32, head, None),
        (f"{a}.attention.q_lora_rank", U32, q_rank, None),
        (f"{a}.attention.compress_ratios", ARR, ratios, I32),
        (f"{a}.hash_layer_count", U32, hash_layers, None),
        (f"{a}.hyper_connection.count", U32, hc, None),
        (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-6, None),
        *_tokenizer(n_vocab),
    ]
    t: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_embd, n_vocab), "output_norm.weight": (n_embd,), "output.weight": (n_embd, n_vocab),
        "output_hc_fn.weight": (hc_dim, hc), "output_hc_base.weight": (hc,), "output_hc_scale.weight": (1,),
    }  # fmt: skip
    for i in range(trunk + 1):
        if i >= trunk and mtp == "dropped":
            continue
        b = f"blk.{i}."
        t.update({
            b + "attn_norm.weight": (n_embd,), b + "attn_sinks.weight": (n_head,),
            b + "attn_q_a.weight": (n_embd, q_rank), b + "attn_q_a_norm.weight": (q_rank,),
            b + "attn_q_b.weight": (q_rank, n_head * head), b + "attn_kv.weight": (n_embd, head),
            b + "attn_kv_a_norm.weight": (head,), b + "attn_output_a.weight": (n_head * head // o_groups, o_rank * o_groups),
            b + "attn_output_b.weight": (o_groups * o_rank, n_embd),
            b + "hc_attn_fn.weight": (hc_dim, hc_mix), b + "hc_attn_base.weight": (hc_mix,), b + "hc_attn_scale.weight": (3,),
            b + "hc_ffn_fn.weight": (hc_dim, hc_mix), b + "hc_ffn_base.weight": (hc_mix,), b + "hc_ffn_scale.weight": (3,),
        })  # fmt: skip
        if ratios[i]:
            coff = 2 if ratios[i] == 4 else 1
            t.update({b + "attn_compressor_kv.weight": (n_embd, coff * head), b + "attn_compressor_gate.weight": (n_embd, coff * head),
                      b + "attn_compressor_ape.weight": (coff * head, ratios[i]), b + "attn_compressor_norm.weight": (head,)})  # fmt: skip
            if ratios[i] == 4:
                t.update({b + "indexer.proj.weight": (n_embd, idx_heads), b + "indexer.attn_q_b.weight": (q_rank, idx_heads * idx_dim),
                          b + "indexer_compressor_kv.weight": (n_embd, 2 * idx_dim), b + "indexer_compressor_gate.weight": (n_embd, 2 * idx_dim),
                          b + "indexer_compressor_ape.weight": (2 * idx_dim, 4), b + "indexer_compressor_norm.weight": (idx_dim,)})  # fmt: skip
        t[b + "ffn_gate_inp.weight"] = (n_embd, n_expert)
        if i < hash_layers:
            t[b + "ffn_gate_tid2eid.weight"] = (2, n_vocab)
        else:
            t[b + "exp_probs_b.bias"] = (n_expert,)
        t.update({
            b + "ffn_norm.weight": (n_embd,),
            b + "ffn_gate_exps.weight": (n_embd, n_ff, n_expert), b + "ffn_down_exps.weight": (n_ff, n_embd, n_expert),
            b + "ffn_up_exps.weight": (n_embd, n_ff, n_expert),
            b + "ffn_gate_shexp.weight": (n_embd, n_ff), b + "ffn_down_shexp.weight": (n_ff, n_embd), b + "ffn_up_shexp.weight": (n_embd, n_ff),
        })  # fmt: skip
        if i >= trunk:
            t.update({b + "nextn.eh_proj.weight": (2 * n_embd, n_embd), b + "nextn.enorm.weight": (n_embd,),
                      b + "nextn.hnorm.weight": (n_embd,)})  # fmt: skip
    return _write(path, a, kvs, t, omit, seed)


GEMMA4_ASSISTANT_BLOCK = ("attn_norm.weight", "attn_q.weight", "attn_output.weight", "attn_q_norm.weight",
                          "post_attention_norm.weight", "layer_output_scale.weight", "ffn_norm.weight",
                          "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", "post_ffw_norm.weight")  # fmt: skip


def write_gemma4_assistant(path: Path, *, target_width: int = 128, n_vocab: int = 160, blocks: int = 2,
                           omit: Collection[str] = (), seed: int = 0) -> Path:  # fmt: skip
    a, n_embd, n_head, head, n_ff = "gemma4-assistant", 64, 2, 32, 128
    kvs: list[tuple[str, GGUFValueType, Any, GGUFValueType | None]] = [
        ("general.name", STR, "tiny-gemma4-assistant", None),
        (f"{a}.block_count", U32, blocks, None),
        (f"{a}.nextn_predict_layers", U32, blocks, None),
        (f"{a}.context_length", U32, 4096, None),
        (f"{a}.embedding_length", U32, n_embd, None),
        (f"{a}.embedding_length_out", U32, target_width, None),
        (f"{a}.feed_forward_length", U32, n_ff, None),
        (f"{a}.attention.head_count", U32, n_head, None),
        (f"{a}.attention.head_count_kv", U32, 1, None),
        (f"{a}.attention.key_length", U32, head, None),
        (f"{a}.attention.value_length", U32, head, None),
        (f"{a}.attention.key_length_swa", U32, head, None),
        (f"{a}.attention.value_length_swa", U32, head, None),
        (f"{a}.attention.sliding_window", U32, 512, None),
        (f"{a}.attention.sliding_window_pattern", ARR, [True] * blocks, GGUFValueType.BOOL),
        (f"{a}.attention.layer_norm_rms_epsilon", F32V, 1e-6, None),
        *_tokenizer(n_vocab),
    ]
    t: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_embd, n_vocab), "output_norm.weight": (n_embd,),
        "nextn.pre_projection.weight": (2 * target_width, n_embd), "nextn.post_projection.weight": (n_embd, target_width),
    }  # fmt: skip
    shapes = {"attn_q.weight": (n_embd, head * n_head), "attn_output.weight": (head * n_head, n_embd),
              "attn_q_norm.weight": (head,), "layer_output_scale.weight": (1,), "ffn_gate.weight": (n_embd, n_ff),
              "ffn_up.weight": (n_embd, n_ff), "ffn_down.weight": (n_ff, n_embd)}  # fmt: skip
    for i in range(blocks):
        for name in GEMMA4_ASSISTANT_BLOCK:
            t[f"blk.{i}.{name}"] = shapes.get(name, (n_embd,))
    return _write(path, a, kvs, t, omit, seed)


def write_gemma4_target(path: Path, *, width: int = 128, n_vocab: int = 160, seed: int = 0) -> Path:
    """A minimal ``gemma4`` model file: one block; what --target reads is its width and vocabulary."""
    a = "gemma4"
    kvs: list[tuple[str, GGUFValueType, Any, GGUFValueType | None]] = [
        ("general.name", STR, "tiny-gemma4", None),
        (f"{a}.block_count", U32, 1, None),
        (f"{a}.context_length", U32, 4096, None),
        (f"{a}.embedding_length", U32, width, None),
        *_tokenizer(n_vocab),
    ]
    t = {"token_embd.weight": (width, n_vocab), "output_norm.weight": (width,), "blk.0.attn_norm.weight": (width,)}
    return _write(path, a, kvs, t, (), seed)
