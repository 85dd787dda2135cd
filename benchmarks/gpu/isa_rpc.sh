#!/usr/bin/env bash
# GPU machine (see benchmarks/RESULTS.md): a CUDA build's CPU side before/after the CPU policy,
# with MoE experts on the CPU (-ngl 99 -ncmoe 99, the --n-cpu-moe users' setup) and all on the
# CPU (-ngl 0); then one GPU local vs the same GPU behind rpc-server on loopback.
# Carry .gpu (whl/, debs/ with ccache, upstream.git: the sdist's llama.cpp). Results in $OUT.
set -u
FINAL=${OUT:-/tmp/out}; OUT=/tmp/isa-results; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/results.tgz" -C "$OUT" .' EXIT  # the device returns at most 8 files
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/cc && for f in .gpu/debs/*.deb; do dpkg -x "$f" /tmp/cc; done
export PATH=/tmp/cc/usr/bin:$PATH LD_LIBRARY_PATH=/tmp/cc/usr/lib/x86_64-linux-gnu
export CCACHE_DIR=/root/ccache HARNESS_CACHE=/root/hc
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="url.file://$PWD/.gpu/upstream.git.insteadOf" GIT_CONFIG_VALUE_0=https://github.com/ggml-org/llama.cpp
{ lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400; gcc --version | head -1; nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader; } > "$OUT/env.txt" 2>&1
python3 -m harness doctor > "$OUT/doctor.txt" 2>&1
t0=$SECONDS
python3 -m harness build benchmarks/gpu/isa-after.yaml --builds-dir /root/builds --json > "$OUT/after.json" 2> "$OUT/after.log"
echo "after: exit $? in $((SECONDS-t0)) s" | tee -a "$OUT/steps.txt"; t0=$SECONDS
for v in before noamx; do
  python3 -m harness build benchmarks/gpu/isa-$v.yaml --builds-dir /root/builds --json > "$OUT/$v.json" 2> "$OUT/$v.log"
  echo "$v: exit $? in $((SECONDS-t0)) s" | tee -a "$OUT/steps.txt"; t0=$SECONDS
done
A=/root/builds/isa-after/cuda/bin
python3 benchmarks/gpu/moe_model.py /root/moe.gguf 8 >> "$OUT/steps.txt" && $A/llama-quantize /root/moe.gguf /root/moe-q4_0.gguf Q4_0 16 > /dev/null 2>&1
echo "model: $((SECONDS-t0)) s" | tee -a "$OUT/steps.txt"
bench() {  # build, placement flags
  /root/builds/isa-$1/cuda/bin/llama-bench -m /root/moe-q4_0.gguf $2 -p 256 -n 32 -r 1 -o jsonl 2>/dev/null \
    | sed "s/^{/{\"build\":\"$1\",\"round\":$round,\"where\":\"$2\",/" >> "$OUT/isa.jsonl"
}
for round in 1 2; do
  for b in after before; do bench $b "-ngl 99 -ncmoe 99"; bench $b "-ngl 0"; done
  bench after "-ngl 0 --repack 0"; bench noamx "-ngl 0"
done
echo "isa bench done at $SECONDS s" | tee -a "$OUT/steps.txt"
[ $SECONDS -gt 500 ] && { echo "no time left for the rpc part"; exit 0; }
$A/ggml-rpc-server -H 127.0.0.1 -p 50052 -d CUDA0 > "$OUT/rpc-server.log" 2>&1 &
sleep 3
for round in 1 2; do
  $A/llama-bench -m /root/moe-q4_0.gguf -ngl 99 -p 256 -n 64 -r 1 -o jsonl 2>/dev/null | sed "s/^{/{\"mode\":\"local\",\"round\":$round,/" >> "$OUT/rpc.jsonl"
  CUDA_VISIBLE_DEVICES= $A/llama-bench -m /root/moe-q4_0.gguf -ngl 99 -rpc 127.0.0.1:50052 -p 256 -n 64 -r 1 -o jsonl 2>> "$OUT/rpc-bench.err" | sed "s/^{/{\"mode\":\"rpc\",\"round\":$round,/" >> "$OUT/rpc.jsonl"
done
kill %1 2>/dev/null
echo "done at $SECONDS s" | tee -a "$OUT/steps.txt"
python3 - <<'PY'
import json, os, statistics
out = "/tmp/isa-results"
def rows(name):
    try:
        return [json.loads(l) for l in open(f"{out}/{name}") if l.strip()]
    except FileNotFoundError:
        return []
for r in rows("isa.jsonl") + rows("rpc.jsonl"):
    kind = "pp" if r.get("n_prompt") else "tg"
    print(r.get("build", r.get("mode")), r.get("where", ""), kind, round(r["avg_ts"], 1))
PY
tail -3 "$OUT/after.log"; tail -3 "$OUT/before.log"
