"""The ``quantize`` check: the new llama-quantize requantizes a real model to Q8_0.

llama-quantize can exit 0 and leave a zeroed or missing file, so the output is opened with
the harness's own bounded GGUF reader and its tensors are counted against the input.
"""

from __future__ import annotations

import time

from harness import runner
from harness.errors import InputError
from harness.gguf_files.reader import open_gguf
from harness.smoke import Context, SmokeFailure, default_model
from harness.smoke.decoder import signal_name
from harness.smoke.results import QuantizeResult


def run(ctx: Context) -> QuantizeResult:
    model = ctx.model or default_model()
    tool = ctx.bin_dir / "llama-quantize"
    if not tool.is_file():
        raise SmokeFailure("quantize", f"the build has no llama-quantize ({tool})")
    ctx.work.mkdir(parents=True, exist_ok=True)
    out = ctx.work / "smoke-Q8_0.gguf"
    t0 = time.monotonic()
    res = runner.run([tool, "--allow-requantize", model, out, "Q8_0", "2"], check=False, timeout=900)
    seconds = round(time.monotonic() - t0, 2)
    tail = "\n".join((res.stdout + res.stderr).splitlines()[-15:])
    if res.returncode < 0:
        raise SmokeFailure("quantize", f"llama-quantize was killed by {signal_name(res.returncode)}:\n{tail}")
    if res.returncode != 0:
        raise SmokeFailure("quantize", f"llama-quantize exited {res.returncode}:\n{tail}")
    try:
        with open_gguf(model) as src, open_gguf(out) as dst:
            n_in, n_out = len(src.tensors), len(dst.tensors)
    except InputError as exc:
        raise SmokeFailure("quantize", f"llama-quantize exited 0 but its output is not a valid GGUF: {exc}") from None
    if n_in != n_out:
        raise SmokeFailure("quantize", f"the quantized file has {n_out} tensors, the input {n_in}")
    size = out.stat().st_size
    out.unlink()
    return QuantizeResult(ok=True, seconds=seconds, tensors=n_out, bytes=size, model=str(model))
