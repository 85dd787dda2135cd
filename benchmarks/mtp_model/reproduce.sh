#!/usr/bin/env bash
# Everything after the GPU run, on a CPU, through the harness CLI (benchmarks/RESULTS.md,
# "A trained MTP head").  RUN: the folder with weights.part*, meta.json (device.sh's $OUT).
# VOCAB: llama.cpp's models/ggml-vocab-qwen35.gguf.  BUILDS: a builds dir holding
# mtp-model/cpu (e.g. a symlink to any CPU build of the recipes' tree); without it the
# recipe is built first (harness build).  WORK: where models and bench reports go.
# THREADS: llama-server -t (1 on a shared, oversubscribed CPU: see RESULTS.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
H=${HARNESS:-$ROOT/.venv/bin/harness}
RUN=${RUN:?set RUN to the GPU run folder}
VOCAB=${VOCAB:?set VOCAB to models/ggml-vocab-qwen35.gguf}
WORK=${WORK:-$ROOT/models/mtp-model}
N_PREDICT=${N_PREDICT:-64}
THREADS=${THREADS:-1}
R=$HERE/recipes
M=qwen35-mtp-tiny
cd "$ROOT"

if [ -z "${BUILDS:-}" ]; then
  "$H" build "$R/q8-heads.yaml"
  BUILDS=$ROOT/builds
fi
BD=(--builds-dir "$BUILDS")

# 1. the Hugging Face checkpoint (Qwen3_5ForCausalLM + mtp.*), the tokenizer from VOCAB
(cd "$HERE" && "$PY" unpack.py "$RUN" "$VOCAB" "$WORK/$M")

# 2. convert (q8_0, MTP kept or dropped), importance matrix, quantize: one recipe per variant
for r in q8-heads low-heads iq2-trunk iq2-low-heads; do
  "$H" quantize "$R/$r.yaml" --model "$WORK/$M" "${BD[@]}" --out "$WORK/$r"
done

# 3. audit; the Q8_0 MTP block of the Q4_K_M file grafted into the IQ2_M trunk
"$H" gguf audit "$WORK/q8-heads/$M-Q4_K_M.gguf"
"$H" gguf audit "$WORK/low-heads/$M-Q4_K_M.gguf"
"$H" gguf audit "$WORK/iq2-low-heads/$M-IQ2_M.gguf"
"$H" gguf audit "$WORK/iq2-trunk/$M-IQ2_M.gguf" || true   # no-mtp-heads: converted with --no-mtp
"$H" gguf extract-mtp "$WORK/q8-heads/$M-Q4_K_M.gguf" -o "$WORK/donor-q8-heads.gguf" --heads-only
"$H" gguf graft "$WORK/iq2-trunk/$M-IQ2_M.gguf" "$WORK/donor-q8-heads.gguf" -o "$WORK/iq2-q8-heads.gguf"
"$H" gguf audit "$WORK/iq2-q8-heads.gguf"

# 4. bench: the built-in suite (code, json, quote, creative), draft depths 1..6; n-gram
#    speculation and two rounds (the pick check) on the Q4_K_M + Q8_0-heads file
B=("$H" bench "$R/q8-heads.yaml" "${BD[@]}" --n-predict "$N_PREDICT")
S=(--sweep draft-n-max=1..6)
T=(-- -t "$THREADS")
"${B[@]}" --model "$WORK/q8-heads/$M-Q8_0.gguf" --spec none,mtp "${S[@]}" --out "$WORK/bench/q8_0" "${T[@]}"
"${B[@]}" --model "$WORK/q8-heads/$M-Q4_K_M.gguf" --spec none,mtp,ngram-mod "${S[@]}" --repeat 2 \
  --out "$WORK/bench/q4km-q8heads" "${T[@]}"
"${B[@]}" --model "$WORK/iq2-q8-heads.gguf" --spec none,mtp "${S[@]}" --out "$WORK/bench/iq2-q8heads" "${T[@]}"
"${B[@]}" --model "$WORK/low-heads/$M-Q4_K_M.gguf" --spec none,mtp "${S[@]}" --out "$WORK/bench/q4km-lowheads" "${T[@]}"
"${B[@]}" --model "$WORK/iq2-low-heads/$M-IQ2_M.gguf" --spec none,mtp "${S[@]}" --out "$WORK/bench/iq2-q2kheads" "${T[@]}"

# 5. llama.cpp's depth-1 acceptance against the PyTorch model's; the tables and the pick check
(cd "$HERE" && "$PY" agreement.py "$WORK/$M" "$WORK/bench/q8_0/bench.json")
(cd "$HERE" && "$PY" table.py "Q8_0 throughout=$WORK/bench/q8_0/bench.json" \
  "Q4_K_M, Q8_0 heads=$WORK/bench/q4km-q8heads/bench.json" \
  "Q4_K_M, Q4_K_M heads=$WORK/bench/q4km-lowheads/bench.json" \
  "IQ2_M, Q8_0 heads grafted=$WORK/bench/iq2-q8heads/bench.json" \
  "IQ2_M, Q2_K heads=$WORK/bench/iq2-q2kheads/bench.json")
