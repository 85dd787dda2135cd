#!/usr/bin/env bash
# GPU machine: build (cold), then llama-server with the harness's default GPU flags
# (compose_args: `-ngl all` on GPU backends) on a tiny qwen35 MTP model; prove every layer
# is offloaded (load log at -lv 4, GPU memory in use) and MTP drafts on the GPU.
source benchmarks/gpu/setup.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m harness build benchmarks/gpu/cuda.yaml --builds-dir /root/builds > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
python3 - <<'PY' > "$OUT/offload.txt" 2>&1
import glob, json, pathlib, subprocess, sys
sys.path.insert(0, ".")
import requests
from harness.recipe.schema import Serve
from harness.serve.server import compose_args, running_server
from tests import models
vocab = pathlib.Path(glob.glob("/root/hc/trees/cuda-*/src/models/ggml-vocab-qwen35.gguf")[0])
model = models.write_qwen35(pathlib.Path("/root/tiny.gguf"), vocab=vocab, rigged=True)
args = compose_args(Serve(), backend="cuda", spec=["draft-mtp"], depth=3) + ["-lv", "4"]
print("args:", args)
log = pathlib.Path("/root/offload-server.log")
with running_server(pathlib.Path("/root/builds/cuda/cuda/bin/llama-server"), model, args, log_path=log) as s:
    r = requests.post(s.url + "/completion", json={"prompt": "Hello", "n_predict": 64, "temperature": 0}).json()
    print("timings:", json.dumps(r["timings"]))
    print(subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv"], capture_output=True, text=True).stdout)
for line in log.read_text().splitlines():
    if any(k in line for k in ("offload", "CUDA0", "layers to GPU", "KV buffer", "compute buffer")):
        print(line[:200])
PY
cat "$OUT/offload.txt" | head -60
