"""The GPU run's parts -> a Hugging Face checkpoint that ``harness quantize`` converts.

Joins ``weights.part*``, expands every Q8_0-packed weight to float32 (q * d: exact, and the
converter's ``--outtype q8_0`` finds the same blocks again), and writes ``model.safetensors``
(Qwen3.5 names, ``mtp.*`` included), ``config.json`` (transformers' ``Qwen3_5TextConfig``,
``mtp_num_hidden_layers: 1``), the tokenizer rebuilt from llama.cpp's
``models/ggml-vocab-qwen35.gguf`` and a model card.

Usage: ``python unpack.py RUN_DIR VOCAB_GGUF OUT_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hf import transformers_config, write_tokenizer
from model import Config


def unpack(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    meta = json.loads((run / "meta.json").read_text())
    blob = b"".join((run / name).read_bytes() for name in meta["parts"])
    packed = load(blob)
    state = {}
    for name, t in packed.items():
        if name.endswith(".q8"):
            base = name[: -len(".q8")]
            d = packed[base + ".d"].float()
            state[base] = (t.float().view(t.shape[0], -1, 32) * d[..., None]).view(t.shape).contiguous()
        elif not name.endswith(".d"):
            state[name] = t
    return state


def main() -> int:
    run, vocab, out = (Path(a) for a in sys.argv[1:4])
    meta = json.loads((run / "meta.json").read_text())
    cfg = Config(**meta["config"])
    state = unpack(run)
    out.mkdir(parents=True, exist_ok=True)
    eos = write_tokenizer(vocab, out)
    config = transformers_config(cfg, eos)
    config.save_pretrained(out)
    from safetensors.torch import save_file

    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": eos, "eos_token_id": eos}) + "\n")
    card = (
        "---\nlicense: mit\nlanguage:\n- en\n---\n\n# qwen35-mtp-tiny\n\n"
        f"A {meta['parameters']:,}-parameter Qwen3.5-architecture model with one MTP layer, trained for "
        f"{meta['steps']} steps ({meta['seconds']} s on {meta['device']}) by benchmarks/mtp_model/train.py "
        "of llama-harness, to measure MTP draft acceptance. Not a useful language model.\n"
    )
    (out / "README.md").write_text(card)
    n_mtp = sum(k.startswith("mtp.") for k in state)
    print(f"{out}: {len(state)} tensors ({n_mtp} mtp.*), {sum(t.numel() for t in state.values()):,} weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
