"""Tiny but valid GGUF models for tests, written with gguf's GGUFWriter.

``write_qwen35`` writes a ``qwen35`` model (llama.cpp's hybrid Gated-DeltaNet/attention
architecture of Qwen3.5) with 4 trunk blocks (3 recurrent + 1 full attention, as
``full_attention_interval`` = 4 gives) and, optionally, 1 MTP block, hidden size 256, with
exactly the tensors and shapes ``src/models/qwen35.cpp`` loads at llama.cpp 0c1e570:

- ``mtp="full"``: block_count 5, nextn_predict_layers 1, blk.4 is a full-attention
  block plus ``nextn.eh_proj/enorm/hnorm`` (the LM head is shared: output_norm + token_embd).
- ``mtp="none"``: block_count 4 and no nextn key, as ``convert_hf_to_gguf.py --no-mtp`` writes.
- ``mtp="dropped"``: block_count 5, nextn_predict_layers 1, but no blk.4 tensors: a quant
  that silently dropped the MTP heads.

All variants draw the same random weights from ``seed``, so their trunk tensors are equal
byte for byte.  ``rigged=True`` makes the next token the same whatever the context, for the
main head and the MTP head alike, so every speculative draft is accepted:

- every trunk and MTP matrix is zero, so the residual stream leaves each block unchanged
  and the last hidden state is the current token's embedding e;
- column 0 of token_embd is 1 for every token and ``RIGGED_BOOST`` for the rigged token T
  (the other columns are small noise), so e[0] > 0 always;
- output_norm is 1 at dimension 0 and 0 elsewhere, so the normed state is c * onehot(0)
  with c = e[0] / rms(e) > 0, and with the tied output head (no output.weight) the logit of
  token t is c * token_embd[t, 0]: T wins by (RIGGED_BOOST - 1) * c, about 140 nats;
- the MTP head's eh_proj copies the normed embedding's dimension 0 to its output's
  dimension 0, and with zero attention and FFN it ends in the same shared head: T again.

``vocab`` is a GGUF whose ``tokenizer.*`` metadata is copied (llama.cpp's
``models/ggml-vocab-qwen35.gguf``, 151,936 tokens: about 90 MB per model with F16
embeddings); without it a 260-token byte-level vocabulary keeps the file at 6 MB for fast
tests (fine for the GGUF tools, not meant for llama.cpp).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter, quants

from harness.gguf_files.reader import open_gguf

F32, F16 = GGMLQuantizationType.F32, GGMLQuantizationType.F16
RIGGED_BOOST = 10.0
RIGGED_TOKEN = "Hello"


@dataclass(frozen=True)
class Qwen35Spec:
    n_embd: int = 256
    n_ff: int = 512
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    trunk_layers: int = 4
    nextn: int = 1
    full_attention_interval: int = 4
    ssm_conv_kernel: int = 4
    ssm_state: int = 32  # head_k_dim == head_v_dim
    ssm_groups: int = 2  # key heads
    ssm_v_heads: int = 4  # value heads (time_step_rank)
    rope_dims: int = 16  # head_dim * partial_rotary_factor 0.25
    rope_sections: tuple[int, int, int, int] = (3, 3, 2, 0)  # sums to rope_dims / 2

    def recurrent(self, il: int) -> bool:
        return il < self.trunk_layers and (il + 1) % self.full_attention_interval != 0


SPEC = Qwen35Spec()


def write_qwen35(
    path: Path,
    *,
    vocab: Path | None = None,
    mtp: Literal["full", "none", "dropped"] = "full",
    rigged: bool = False,
    seed: int = 0,
    mtp_type: GGMLQuantizationType = F16,
    spec: Qwen35Spec = SPEC,
    omit: Collection[str] = (),
    n_vocab: int | None = None,
    extra: Sequence[tuple[str, GGUFValueType, Any, GGUFValueType | None]] = (),
) -> Path:
    """Write the model to ``path`` and return it.

    ``mtp_type`` types the MTP block's matrices, ``omit`` names tensors to leave out, and
    ``n_vocab`` pads the small built-in vocabulary with extra tokens; ``extra`` adds metadata
    entries (key, type, value, element type).
    """
    tokenizer = _tokenizer(vocab, n_vocab)
    tokens = tokenizer["tokenizer.ggml.tokens"][2]
    tensors = _tensors(spec, len(tokens), rigged, tokens.index(RIGGED_TOKEN) if rigged else -1, seed)
    block_count = spec.trunk_layers + (0 if mtp == "none" else spec.nextn)

    writer = GGUFWriter(path, "qwen35")
    a = "qwen35"
    u32 = GGUFValueType.UINT32
    kvs: list[tuple[str, GGUFValueType, Any, GGUFValueType | None]] = [
        ("general.name", GGUFValueType.STRING, "tiny-qwen35" + ("-rigged" if rigged else ""), None),
        ("general.file_type", u32, 1, None),
        (f"{a}.block_count", u32, block_count, None),
        (f"{a}.context_length", u32, 4096, None),
        (f"{a}.embedding_length", u32, spec.n_embd, None),
        (f"{a}.feed_forward_length", u32, spec.n_ff, None),
        (f"{a}.attention.head_count", u32, spec.n_head, None),
        (f"{a}.attention.head_count_kv", u32, spec.n_head_kv, None),
        (f"{a}.attention.key_length", u32, spec.head_dim, None),
        (f"{a}.attention.value_length", u32, spec.head_dim, None),
        (f"{a}.attention.layer_norm_rms_epsilon", GGUFValueType.FLOAT32, 1e-6, None),
        (f"{a}.rope.freq_base", GGUFValueType.FLOAT32, 10_000_000.0, None),
        (f"{a}.rope.dimension_count", u32, spec.rope_dims, None),
        (f"{a}.rope.dimension_sections", GGUFValueType.ARRAY, list(spec.rope_sections), GGUFValueType.INT32),
        (f"{a}.ssm.conv_kernel", u32, spec.ssm_conv_kernel, None),
        (f"{a}.ssm.state_size", u32, spec.ssm_state, None),
        (f"{a}.ssm.group_count", u32, spec.ssm_groups, None),
        (f"{a}.ssm.time_step_rank", u32, spec.ssm_v_heads, None),
        (f"{a}.ssm.inner_size", u32, spec.ssm_state * spec.ssm_v_heads, None),
        (f"{a}.full_attention_interval", u32, spec.full_attention_interval, None),
        (
            f"{a}.attention.recurrent_layers",
            GGUFValueType.ARRAY,
            [spec.recurrent(il) for il in range(block_count)],
            GGUFValueType.BOOL,
        ),
    ]
    if mtp != "none":
        kvs.append((f"{a}.nextn_predict_layers", u32, spec.nextn, None))
    for key, vtype, value, sub in [*kvs, *tokenizer.values(), *extra]:
        writer.add_key_value(key, value, vtype, sub)

    for name, array in tensors.items():
        is_mtp = name.startswith(f"blk.{spec.trunk_layers}.")
        if (is_mtp and mtp != "full") or name in omit:
            continue
        qtype = F32 if array.ndim == 1 or ".ssm_conv1d." in name else F16
        if is_mtp and qtype == F16:
            qtype = mtp_type
        data = (
            array.astype(np.float16)
            if qtype == F16
            else array
            if qtype == F32
            else quants.quantize(array, qtype)
        )
        writer.add_tensor(name, data, raw_dtype=qtype if qtype not in (F32, F16) else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tensors(spec: Qwen35Spec, n_vocab: int, rigged: bool, token: int, seed: int) -> dict[str, np.ndarray]:
    """All tensors of the full model (trunk and MTP block), in numpy order (outermost dim first)."""
    rng = np.random.default_rng(seed)
    n = spec.n_embd

    def mat(rows: int, cols: int, std: float = 0.02) -> np.ndarray:
        w = rng.normal(0.0, std, size=(rows, cols)).astype(np.float32)
        return np.zeros_like(w) if rigged else w

    def ones(k: int) -> np.ndarray:
        return np.ones(k, dtype=np.float32)

    embd = rng.normal(0.0, 0.02, size=(n_vocab, n)).astype(np.float32)
    out_norm = ones(n)
    if rigged:
        embd[:, 0] = 1.0
        embd[token, 0] = RIGGED_BOOST
        out_norm = np.zeros(n, dtype=np.float32)
        out_norm[0] = 1.0
    t: dict[str, np.ndarray] = {"token_embd.weight": embd, "output_norm.weight": out_norm}

    q_out, kv_out = spec.head_dim * spec.n_head * 2, spec.head_dim * spec.n_head_kv
    key_dim, value_dim = spec.ssm_state * spec.ssm_groups, spec.ssm_state * spec.ssm_v_heads
    for il in range(spec.trunk_layers + spec.nextn):
        b = f"blk.{il}."
        t[b + "attn_norm.weight"] = ones(n)
        if spec.recurrent(il):
            t[b + "attn_qkv.weight"] = mat(key_dim * 2 + value_dim, n)
            t[b + "attn_gate.weight"] = mat(value_dim, n)
            conv = rng.normal(0.0, 0.1, size=(key_dim * 2 + value_dim, spec.ssm_conv_kernel)).astype(
                np.float32
            )
            t[b + "ssm_conv1d.weight"] = np.zeros_like(conv) if rigged else conv
            t[b + "ssm_dt.bias"] = np.zeros(spec.ssm_v_heads, dtype=np.float32)
            a = -rng.uniform(0.5, 1.5, size=spec.ssm_v_heads).astype(np.float32)
            t[b + "ssm_a"] = np.zeros_like(a) if rigged else a
            t[b + "ssm_beta.weight"] = mat(spec.ssm_v_heads, n)
            t[b + "ssm_alpha.weight"] = mat(spec.ssm_v_heads, n)
            t[b + "ssm_norm.weight"] = ones(spec.ssm_state)
            t[b + "ssm_out.weight"] = mat(n, value_dim)
        else:
            t[b + "attn_q.weight"] = mat(q_out, n)
            t[b + "attn_k.weight"] = mat(kv_out, n)
            t[b + "attn_v.weight"] = mat(kv_out, n)
            t[b + "attn_output.weight"] = mat(n, spec.head_dim * spec.n_head)
            t[b + "attn_q_norm.weight"] = ones(spec.head_dim)
            t[b + "attn_k_norm.weight"] = ones(spec.head_dim)
        t[b + "post_attention_norm.weight"] = ones(n)
        t[b + "ffn_gate.weight"] = mat(spec.n_ff, n)
        t[b + "ffn_up.weight"] = mat(spec.n_ff, n)
        t[b + "ffn_down.weight"] = mat(n, spec.n_ff)
        if il >= spec.trunk_layers:
            eh = mat(n, 2 * n)
            if rigged:
                eh[0, 0] = 1.0  # output dim 0 <- the normed token embedding's dim 0
            t[b + "nextn.eh_proj.weight"] = eh
            t[b + "nextn.enorm.weight"] = ones(n)
            t[b + "nextn.hnorm.weight"] = ones(n)
    return t


def _tokenizer(
    vocab: Path | None, n_vocab: int | None = None
) -> dict[str, tuple[str, GGUFValueType, Any, GGUFValueType | None]]:
    if vocab is not None:
        with open_gguf(vocab) as gf:
            return {
                kv.key: (kv.key, kv.type, kv.value, kv.sub_type)
                for kv in gf.kv.values()
                if kv.key.startswith("tokenizer.")
            }
    tokens = [*_byte_chars(), "<|endoftext|>", "<|im_start|>", "<|im_end|>", RIGGED_TOKEN]
    types = [1] * 256 + [3, 3, 3, 1]
    extra = max(0, (n_vocab or 0) - len(tokens))
    tokens += [f"<|extra_{i}|>" for i in range(extra)]
    types += [4] * extra
    arr, s = GGUFValueType.ARRAY, GGUFValueType.STRING
    entries = [
        ("tokenizer.ggml.model", s, "gpt2", None),
        ("tokenizer.ggml.pre", s, "qwen35", None),
        ("tokenizer.ggml.tokens", arr, tokens, s),
        ("tokenizer.ggml.token_type", arr, types, GGUFValueType.INT32),
        ("tokenizer.ggml.merges", arr, ["H e", "l l", "He ll"], s),
        ("tokenizer.ggml.eos_token_id", GGUFValueType.UINT32, 256, None),
        ("tokenizer.ggml.bos_token_id", GGUFValueType.UINT32, 256, None),
    ]
    return {e[0]: e for e in entries}


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table: 256 printable stand-ins for the 256 byte values."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars
