#!/usr/bin/env bash
# GPU machine: what llama.cpp's RPC protocol costs on one GPU. SmolLM2 on the GPU locally against
# the same GPU behind one rpc-server on 127.0.0.1 (benchmarks/rpc_bench.py --gpu), after an end-to-end
# check through the harness (harness rpc-server + harness serve --rpc). Same machine setup as
# build.sh/bench.sh; MODEL defaults to the SmolLM2 GGUF bench.sh assembles at /root/smol.gguf.
source benchmarks/gpu/setup.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
MODEL=${MODEL:-/root/smol.gguf}
ROUNDS=${ROUNDS:-7}
python3 -m harness build benchmarks/gpu/cuda-rpc.yaml --builds-dir /root/builds --json > "$OUT/rpc-build.json" 2> "$OUT/rpc-build.log"
# end to end: the recipe's rpc-server on loopback, offering CUDA0; the head puts every layer on it
python3 -m harness rpc-server benchmarks/gpu/cuda-rpc.yaml --builds-dir /root/builds --port 50052 --device CUDA0 \
  --json > "$OUT/rpc-server.json" 2> "$OUT/rpc-server.err" &
RS=$!
for _ in $(seq 120); do [ -s "$OUT/rpc-server.json" ] && break; sleep 1; done
python3 -m harness serve benchmarks/gpu/cuda-rpc.yaml --builds-dir /root/builds --model "$MODEL" --rpc 127.0.0.1:50052 \
  --prompt "The capital of France is" --json -- --device RPC0 > "$OUT/rpc-serve.json" 2> "$OUT/rpc-serve.err"
kill -INT $RS; wait $RS; echo "rpc-server exit $?" >> "$OUT/rpc-server.err"
# the measurement: medians of alternating rounds, ratios to local
python3 benchmarks/rpc_bench.py --bin /root/builds/cuda-rpc/cuda/bin --model "$MODEL" --gpu --rounds "$ROUNDS" \
  --n-predict 128 > "$OUT/rpc-bench.txt" 2>&1
# the CPU half again on this quiet host (the 2-core dev machine's figures are contention-bound)
python3 benchmarks/rpc_bench.py --bin /root/builds/cuda-rpc/cuda/bin --model "$MODEL" --threads 4 --rounds "$ROUNDS" \
  --n-predict 64 > "$OUT/rpc-bench-cpu.txt" 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/rpc-gpu.txt" 2>&1
tail -3 "$OUT/rpc-build.log"; cat "$OUT/rpc-server.json" "$OUT/rpc-serve.json"; tail -7 "$OUT/rpc-bench.txt" "$OUT/rpc-bench-cpu.txt"
