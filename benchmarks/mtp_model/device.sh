#!/usr/bin/env bash
# On the GPU machine (one H200 here), in the folder prepare.sh filled: train for MINUTES
# (default 7) and leave weights.part*, meta.json and train.log in $OUT.  Needs python3 with
# torch, numpy, safetensors and tokenizers; nothing else (no transformers, no network).
set -euo pipefail
OUT=${OUT:?set OUT to the output folder}
nvidia-smi -L || true
python3 -c 'import torch, tokenizers, safetensors, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, "tokenizers", tokenizers.__version__)'
PYTHONUNBUFFERED=1 timeout 575 python3 train.py --data data --tokenizer tokenizer.json.xz --out "$OUT" \
  --minutes "${MINUTES:-7}" --seed "${SEED:-0}" ${STEPS:+--steps "$STEPS"}
ls -l "$OUT"
