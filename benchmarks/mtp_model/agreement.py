"""Cross-check llama.cpp's MTP against the PyTorch model: depth-1 acceptance per category.

At draft depth 1 llama-server accepts a draft exactly when the MTP layer's top token for the
pair (h_t, x_{t+1}) equals the trunk's greedy token x_{t+2}, and at temperature 0 the
accepted prefix is the model's own greedy text.  So the rate at which the PyTorch MTP's
argmax matches the next token of the text llama-server generated (teacher-forced on prompt
+ that text) should come out close to the acceptance ``harness bench`` measured for
``mtp@1`` on the same file; a wrong MTP wiring (hidden state, concat order, norms,
positions) would leave llama.cpp near 0 %.  Quantization of the GGUF (Q8_0 here) and the
retokenised text make small differences.

Usage: ``python agreement.py HF_DIR BENCH_JSON`` (``unpack.py``'s checkpoint, a bench.json
with an ``mtp@1`` mode).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from model import Config, Qwen35MTP

SYSTEM = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"


def load(hf_dir: Path) -> Qwen35MTP:
    from safetensors.torch import load_file

    cfg_json = json.loads((hf_dir / "config.json").read_text())
    fields = Config.__dataclass_fields__
    cfg = Config(**{k: v for k, v in cfg_json.items() if k in fields})
    cfg.rope_theta = cfg_json["rope_parameters"]["rope_theta"]
    cfg.partial_rotary_factor = cfg_json["rope_parameters"]["partial_rotary_factor"]
    model = Qwen35MTP(cfg).eval()
    model.load_state_dict(load_file(str(hf_dir / "model.safetensors")))
    return model


def main() -> int:
    hf_dir, bench = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    from tokenizers import Tokenizer

    from harness.bench.prompts import load_suite

    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    model = load(hf_dir)
    prompts = {(p.category, p.name): p.text for p in load_suite()}
    rows = {r["category"]: r for r in bench["rows"] if r["mode"] == "mtp@1"}
    totals: dict[str, list[int]] = {}
    for s in bench["samples"]:
        if s["mode"] != "mtp@1" or (s["category"], s["prompt"]) not in prompts:
            continue
        head = f"{SYSTEM}<|im_start|>user\n{prompts[(s['category'], s['prompt'])]}<|im_end|>\n<|im_start|>assistant\n"
        start = len(tok.encode(head, add_special_tokens=False).ids)
        ids = tok.encode(head + s["text"], add_special_tokens=False).ids
        x = torch.tensor([ids])
        with torch.no_grad():
            h = model.hidden(x)
            draft = model.logits(model.mtp_hidden(h[:, :-2], x[:, 1:-1])).argmax(-1)[0]
        # pair (h_t, x_{t+1}) drafts x_{t+2}; drafts start once the first token was sampled
        hit = (draft[start - 1 :] == x[0, start + 1 :]).sum().item()
        tot = totals.setdefault(s["category"], [0, 0])
        tot[0] += int(hit)
        tot[1] += len(ids) - start - 1
    print(f"{'category':10s} {'torch agreement':>16s} {'llama.cpp mtp@1':>16s}")
    for cat, (hit, n) in sorted(totals.items()):
        r = rows.get(cat)
        measured = f"{r['acceptance']:.1%}" if r and r.get("acceptance") is not None else "-"
        print(f"{cat:10s} {hit / max(n, 1):>16.1%} {measured:>16s}   ({n} tokens)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
