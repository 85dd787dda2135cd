"""CPU check: model.py computes what transformers' Qwen3_5ForCausalLM computes.

A small random model (norm weights randomised too, so a missing ``1 +`` shows), its
``state_dict()`` loaded into transformers (only ``mtp.*`` left over, only the tied
``lm_head`` missing), logits compared over a sequence that is not a multiple of the
delta-net chunk; then one training step under bfloat16 autocast (what CUDA runs).  Usage: ``python check.py``; exit 1 on a mismatch.
"""

from __future__ import annotations

import sys

import torch
from hf import transformers_config
from model import Config, Qwen35MTP


def main() -> int:
    torch.manual_seed(0)
    cfg = Config(vocab_size=1000, hidden_size=128, num_hidden_layers=4, intermediate_size=256, head_dim=32,
                 linear_key_head_dim=32, linear_value_head_dim=32)  # fmt: skip
    ours = Qwen35MTP(cfg).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    from transformers import Qwen3_5ForCausalLM

    config = transformers_config(cfg, eos=0)
    config._attn_implementation = "eager"
    theirs = Qwen3_5ForCausalLM(config).eval()
    result = theirs.load_state_dict(ours.hf_state_dict(), strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith("mtp.")]
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if unexpected or missing:
        print(f"name mismatch: unexpected {unexpected}, missing {missing}")
        return 1
    theirs.tie_weights()
    ids = torch.randint(0, cfg.vocab_size, (2, 150))
    with torch.no_grad():
        a = ours.logits(ours.hidden(ids))
        b = theirs(ids).logits
    err = (a - b).abs().max().item()
    scale = b.abs().max().item()
    print(f"max |logit difference| {err:.2e} (logits up to {scale:.2f})")
    if err >= 1e-3 * max(scale, 1.0):
        return 1
    # one training step under bfloat16 autocast, as train.py runs on CUDA (the delta rule must stay float32)
    from train import losses

    ours.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        main, mtp = losses(ours, ids)
        loss = main + 0.5 * mtp
    loss.backward()
    grads = [p.grad for p in ours.parameters()]
    if any(g is None or not torch.isfinite(g).all() for g in grads):
        print("autocast step: a parameter got no gradient or a non-finite one")
        return 1
    print(
        f"autocast step: loss {main.item():.3f}, mtp {mtp.item():.3f}, every parameter has a finite gradient"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
