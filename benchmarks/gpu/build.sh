#!/usr/bin/env bash
# GPU machine, step 1: CUDA builds through `harness build` (ccache cold, then warm), stamp,
# manifest, and full offload of a tiny model. Writes results under $OUT.
source benchmarks/gpu/setup.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv; nvcc --version | tail -2; cmake --version | head -1; ninja --version; ccache --version | head -1; git --version; } > "$OUT/env.txt" 2>&1
python3 -m harness doctor > "$OUT/doctor.txt" 2>&1
ccache -z -M 20G >/dev/null
/usr/bin/time -f "%e s" -o "$OUT/cold.time" python3 -m harness build benchmarks/gpu/cuda.yaml --builds-dir /root/builds --json > "$OUT/cold.json" 2> "$OUT/cold.log"
ccache -s > "$OUT/ccache-cold.txt"; ccache -z >/dev/null
/usr/bin/time -f "%e s" -o "$OUT/warm.time" python3 -m harness build benchmarks/gpu/cuda-warm.yaml --builds-dir /root/builds --json > "$OUT/warm.json" 2> "$OUT/warm.log"
ccache -s > "$OUT/ccache-warm.txt"
/usr/bin/time -f "%e s" -o "$OUT/noop.time" python3 -m harness build benchmarks/gpu/cuda.yaml --builds-dir /root/builds --json > "$OUT/noop.json" 2>&1
cp /root/builds/cuda/cuda/manifest.json "$OUT/manifest.json" 2>/dev/null
/root/builds/cuda/cuda/bin/llama-server --version > "$OUT/version.txt" 2>&1
python3 - <<'PY' >> "$OUT/offload.txt" 2>&1
import glob, subprocess, sys, time, pathlib
sys.path.insert(0, ".")
from tests import models
vocab = glob.glob("/root/hc/trees/cuda-*/src/models/ggml-vocab-qwen35.gguf")[0]
models.write_qwen35(pathlib.Path("/root/tiny.gguf"), vocab=pathlib.Path(vocab), rigged=True)
from harness.serve.server import running_server
log = pathlib.Path("/root/tiny-server.log")
with running_server(pathlib.Path("/root/builds/cuda/cuda/bin/llama-server"), pathlib.Path("/root/tiny.gguf"), ["-ngl", "999", "-c", "512"], log_path=log):
    pass
print("\n".join(l for l in log.read_text().splitlines() if "offload" in l or "CUDA" in l or "error" in l.lower())[:4000])
PY
tail -3 "$OUT/cold.log"; grep -h . "$OUT"/*.time; cat "$OUT/version.txt" "$OUT/offload.txt"
tar czf /tmp/build-results.tgz -C "$OUT" . && rm -rf "$OUT"/* && mv /tmp/build-results.tgz "$OUT/"
