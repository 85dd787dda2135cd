#!/usr/bin/env bash
# Fill DEST (default: .carry/mtp of this checkout) with what the GPU machine needs: the corpus
# (data.py, from this machine's files), the Qwen3.5 tokenizer rebuilt from llama.cpp's
# models/ggml-vocab-qwen35.gguf (VOCAB=...), model.py, train.py and device.sh.  About 5 MB.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
DEST=${1:-$ROOT/.carry/mtp}
VOCAB=${VOCAB:?set VOCAB to llama.cpp models/ggml-vocab-qwen35.gguf}
mkdir -p "$DEST/data"
(cd "$HERE" && "$PY" data.py "$DEST/data")
(cd "$HERE" && "$PY" -c "import sys; from pathlib import Path; from hf import write_tokenizer; write_tokenizer(Path(sys.argv[1]), Path(sys.argv[2]))" "$VOCAB" "$DEST/tok")
xz -9 -c "$DEST/tok/tokenizer.json" > "$DEST/tokenizer.json.xz" && rm -r "$DEST/tok"
cp "$HERE/model.py" "$HERE/train.py" "$HERE/device.sh" "$DEST/"
du -sh "$DEST"
