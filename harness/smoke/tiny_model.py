"""A tiny ``llama`` model written by the harness itself, for the decode smoke check.

Deterministic (numpy's PCG64 from a fixed seed, F16 weights), about 1.4 M parameters and
3 MB, written in well under a second, no download.  Its shapes reach every CPU kernel
family the smoke check quantizes to: every matrix's rows (ne[0]) are multiples of 256, as
K-quants and IQ4_XS need (``QK_K`` in ggml-common.h), and large enough for ggml's
repacked-weight paths (AMX tiles, AVX2/AVX-512 Q4_0x8 repacks) to take them.

The vocabulary is a SentencePiece one (``tokenizer.ggml.model = llama``) with no byte tokens:
``<unk> <s> </s>``, a newline, every printable ASCII character, ``▁`` (a space) and a few word
pieces.  Any ASCII prompt tokenizes from the single characters, and whatever the random
weights sample, the text is valid UTF-8: a byte token (``<0xFF>``) alone is not, and a
server that parses its output (llama.cpp's Content-only chat parser, b10018 era) answers
HTTP 500 to it.  llama.cpp prints ``<unk>`` as ``▅`` and control tokens as nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_EMBD = 256
N_FF = 512
N_HEAD = 4
N_HEAD_KV = 2
N_LAYER = 2
N_CTX = 512
SEED = 20261130
N_TENSORS = 2 + 9 * N_LAYER
PIECES = ["\n", *(chr(c) for c in range(0x21, 0x7F)), "▁", "▁the", "▁a", "▁is", "▁of", "▁and", "▁to", "▁in", "▁Hello",
          "▁world", "▁model", "▁llama"]

# llama_token_type (llama.h): 1 normal, 2 unknown, 3 control
_NORMAL, _UNKNOWN, _CONTROL = 1, 2, 3


def vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", *PIECES]
    scores = [0.0] * 3 + [-float(i + 1) for i in range(len(PIECES))]
    types = [_UNKNOWN, _CONTROL, _CONTROL, *[_NORMAL] * len(PIECES)]
    return tokens, scores, types


def write(path: Path, *, seed: int = SEED) -> Path:
    """Write the model (F16 matrices, F32 norms) to ``path``; the same bytes every time."""
    from gguf import GGUFWriter, LlamaFileType

    tokens, scores, types = vocab()
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # numpy (rows, cols) is ggml [cols, rows]: ne[0] = cols, the row length
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.05).astype(np.float16)

    head_dim = N_EMBD // N_HEAD
    writer = GGUFWriter(path, "llama")
    writer.add_name("llama-harness decode smoke")
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    ones = np.ones(N_EMBD, dtype=np.float32)
    writer.add_tensor("token_embd.weight", matrix(len(tokens), N_EMBD))
    writer.add_tensor("output_norm.weight", ones)
    for i in range(N_LAYER):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones)
        writer.add_tensor(f"{blk}.attn_q.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"{blk}.attn_k.weight", matrix(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"{blk}.attn_v.weight", matrix(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"{blk}.attn_output.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones)
        writer.add_tensor(f"{blk}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_down.weight", matrix(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
