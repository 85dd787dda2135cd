"""A random Mixtral-style MoE model (llama architecture with experts) for CPU-offload measurements.

Usage: python benchmarks/gpu/moe_model.py OUT.gguf [LAYERS]
Hidden 1024, 8 experts of FFN 2048 (2 used), 16 layers: about 0.9 B parameters, 1.7 GB in F16.
Random weights (numpy, fixed seed): speed only, the text is noise.  The vocabulary is the
decode smoke model's (harness/smoke/tiny_model.py), so any prompt tokenizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.smoke import tiny_model

N_EMBD, N_FF, N_HEAD, N_HEAD_KV, N_EXPERT, N_USED = 1024, 2048, 16, 4, 8, 2


def write(path: Path, layers: int = 16) -> Path:
    from gguf import GGUFWriter, LlamaFileType

    tokens, scores, types = tiny_model.vocab()
    rng = np.random.default_rng(7)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    head_dim = N_EMBD // N_HEAD
    out = GGUFWriter(path, "llama")
    out.add_name("llama-harness MoE offload bench")
    out.add_file_type(LlamaFileType.MOSTLY_F16)
    out.add_context_length(4096)
    out.add_embedding_length(N_EMBD)
    out.add_block_count(layers)
    out.add_feed_forward_length(N_FF)
    out.add_head_count(N_HEAD)
    out.add_head_count_kv(N_HEAD_KV)
    out.add_rope_dimension_count(head_dim)
    out.add_layer_norm_rms_eps(1e-5)
    out.add_expert_count(N_EXPERT)
    out.add_expert_used_count(N_USED)
    out.add_vocab_size(len(tokens))
    out.add_tokenizer_model("llama")
    out.add_token_list(tokens)
    out.add_token_scores(scores)
    out.add_token_types(types)
    out.add_bos_token_id(1)
    out.add_eos_token_id(2)
    ones = np.ones(N_EMBD, dtype=np.float32)
    out.add_tensor("token_embd.weight", w(len(tokens), N_EMBD))
    out.add_tensor("output_norm.weight", ones)
    for i in range(layers):
        b = f"blk.{i}"
        out.add_tensor(f"{b}.attn_norm.weight", ones)
        out.add_tensor(f"{b}.attn_q.weight", w(N_EMBD, N_EMBD))
        out.add_tensor(f"{b}.attn_k.weight", w(N_HEAD_KV * head_dim, N_EMBD))
        out.add_tensor(f"{b}.attn_v.weight", w(N_HEAD_KV * head_dim, N_EMBD))
        out.add_tensor(f"{b}.attn_output.weight", w(N_EMBD, N_EMBD))
        out.add_tensor(f"{b}.ffn_norm.weight", ones)
        out.add_tensor(f"{b}.ffn_gate_inp.weight", w(N_EXPERT, N_EMBD).astype(np.float32))
        out.add_tensor(f"{b}.ffn_gate_exps.weight", w(N_EXPERT, N_FF, N_EMBD))
        out.add_tensor(f"{b}.ffn_up_exps.weight", w(N_EXPERT, N_FF, N_EMBD))
        out.add_tensor(f"{b}.ffn_down_exps.weight", w(N_EXPERT, N_EMBD, N_FF))
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()
    return path


if __name__ == "__main__":
    target = write(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 16)
    print(target, target.stat().st_size)
