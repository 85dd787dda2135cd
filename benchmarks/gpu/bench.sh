#!/usr/bin/env bash
# GPU machine, step 2 (after build.sh on the same warm machine; the SmolLM2 GGUF arrives in two
# carried parts, .smolA/ then .smolB/): harness bench for SmolLM2 (none / n-gram speculation per
# task category) and the MTP ceiling sweep on a rigged trunk-dominant qwen35 model.
source benchmarks/gpu/setup.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
cat /root/smol.part .smolB/part .smolB/part2 > /root/smol.gguf
sha256sum /root/smol.gguf > "$OUT/smol.sha256"
python3 -m harness bench benchmarks/gpu/cuda.yaml --model /root/smol.gguf --spec none,ngram-mod,ngram-simple \
  --builds-dir /root/builds --out "$OUT/smol" --n-predict 256 --repeat 3 > "$OUT/smol.txt" 2>&1
vocab=$(ls /root/hc/trees/cuda-*/src/models/ggml-vocab-qwen35.gguf | head -1)
python3 benchmarks/gpu/big_model.py /root/big.gguf "$vocab" 24 > "$OUT/big.txt" 2>&1
python3 -m harness bench benchmarks/gpu/cuda.yaml --model /root/big.gguf --spec none,mtp --sweep draft-n-max=1..6 \
  --builds-dir /root/builds --out "$OUT/mtp" --n-predict 256 --repeat 2 > "$OUT/mtp.txt" 2>&1
tail -30 "$OUT/smol.txt"; tail -40 "$OUT/mtp.txt"
tar czf /tmp/bench-results.tgz -C "$OUT" . && rm -rf "$OUT"/* && mv /tmp/bench-results.tgz "$OUT/"
