"""A rigged qwen35 MTP model whose trunk dominates (hidden 2048, 24 trunk layers + 1 MTP layer).

Random weights; the main head and the MTP head are rigged to always emit the same token, so
every draft is accepted: `draft-mtp` at depth d can approach (d+1)x over no speculation only as
far as the trunk's cost dominates the head's.  Usage: python benchmarks/gpu/big_model.py OUT VOCAB [LAYERS]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.models import Qwen35Spec, write_qwen35

BIG = Qwen35Spec(n_embd=2048, n_ff=6144, n_head=16, n_head_kv=2, head_dim=128, trunk_layers=24,
                 ssm_state=128, ssm_groups=16, ssm_v_heads=32, rope_dims=32, rope_sections=(6, 5, 5, 0))

if __name__ == "__main__":
    out, vocab = Path(sys.argv[1]), Path(sys.argv[2])
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else BIG.trunk_layers
    from dataclasses import replace

    write_qwen35(out, vocab=vocab, rigged=True, spec=replace(BIG, trunk_layers=layers))
    print(out, out.stat().st_size)
