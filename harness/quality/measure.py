"""What a quant costs in quality: KL divergence against a reference, measured by llama-perplexity itself.

Two runs of the real tool (llama.cpp PR 6936), never our own arithmetic:

- ``write_base``: ``llama-perplexity -m REF -f TEXT -c CTX --chunks N --kl-divergence-base FILE`` stores the
  reference's log-probabilities of every scored token (the second half of each chunk);
- ``measure``: ``llama-perplexity -m QUANT --kl-divergence-base FILE --kl-divergence`` compares a quant with
  them; the figures (mean KLD, its 99th percentile, "Same top p", PPL(Q)/PPL(base)) are parsed from the
  tool's own statistics.

The reference file's size is known before it is written (``base_bytes``, the layout of tools/perplexity):
20 header bytes, the tokens (``4 * ctx * chunks``) and per chunk ``ctx - 1 - ctx/2`` rows of
``2 * ((n_vocab + 1) / 2) + 4`` uint16.  Gemma 3's 262,144-token vocabulary makes that 128 MiB per chunk
at ctx 512; the disk preflight checks it, and the written file must have exactly that size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from harness import runner
from harness.errors import InputError, StepError

PERPLEXITY = "llama-perplexity"
SCHEMA = 1
MIN_SCORED = 100  # below this many scored tokens llama-perplexity prints no statistics (kl_divergence())
MAGIC = b"_logits_"

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf))"
_PATTERNS = {
    "ppl": rf"^Mean PPL\(Q\)\s*:\s*{_NUM}",
    "ppl_base": rf"^Mean PPL\(base\)\s*:\s*{_NUM}",
    "ppl_ratio": rf"^Mean PPL\(Q\)/PPL\(base\)\s*:\s*{_NUM}",
    "mean_kld": rf"^Mean\s+KLD:\s*{_NUM}",
    "max_kld": rf"^Maximum KLD:\s*{_NUM}",
    "p99_kld": rf"^99\.0%\s+KLD:\s*{_NUM}",
    "median_kld": rf"^Median\s+KLD:\s*{_NUM}",
    "same_top_p": rf"^Same top p:\s*{_NUM}",
}
_FINAL = re.compile(rf"Final estimate: PPL = {_NUM}")
_CHUNKS = re.compile(r"computing over (\d+) chunks|calculating perplexity over (\d+) chunks")


class Settings(BaseModel):
    """How the measurement is made: context per chunk and the most chunks of the text to score."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ctx: int = 512
    chunks: int = 4


class Measure(BaseModel):
    """One quant against the reference; KLD in nats, ``same_top_p`` a fraction (0..1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    file: str
    size: int
    bits_per_weight: float | None
    mean_kld: float
    p99_kld: float
    max_kld: float
    median_kld: float
    same_top_p: float
    ppl: float
    ppl_base: float
    ppl_ratio: float
    seconds: float


class Base(BaseModel):
    """The reference's stored log-probabilities."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    reference: str
    path: str
    size: int
    chunks: int
    ctx: int
    n_vocab: int
    ppl: float | None
    seconds: float


class Report(BaseModel):
    """``harness quality --json`` and the pipeline's quality step record this."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = SCHEMA
    evaluation: str
    settings: Settings
    base: Base
    results: list[Measure]


def scored(*, ctx: int, chunks: int) -> int:
    """Tokens llama-perplexity scores: the second half of each chunk, less the last."""
    return chunks * (ctx - 1 - ctx // 2)


def too_few(*, ctx: int, chunks: int) -> str | None:
    """Why ``ctx`` and ``chunks`` give no statistics, or None."""
    n = scored(ctx=ctx, chunks=chunks)
    if n >= MIN_SCORED:
        return None
    return (f"{chunks} chunk(s) of {ctx} tokens score {n} tokens; llama-perplexity prints no KL divergence "
            f"statistics for fewer than {MIN_SCORED}: raise chunks or ctx")


def n_vocab(model: Path) -> int:
    """The vocabulary size of a GGUF (its tokenizer's token list), bounded by the file's size."""
    from harness.gguf_files.split import open_model

    with open_model(model) as gf:
        tokens = gf.value("tokenizer.ggml.tokens")
        size = gf.size
    if not isinstance(tokens, Sequence) or isinstance(tokens, str) or not tokens or len(tokens) > size:
        raise InputError(f"{model}: no tokenizer.ggml.tokens: cannot measure KL divergence without a vocabulary")
    return len(tokens)


def base_bytes(*, ctx: int, chunks: int, vocab: int) -> int:
    """The exact size of ``--kl-divergence-base`` output for ``chunks`` chunks of ``ctx`` tokens."""
    nv = 2 * ((vocab + 1) // 2) + 4
    return len(MAGIC) + 12 + 4 * ctx * chunks + chunks * (ctx - 1 - ctx // 2) * nv * 2


def parse(text: str) -> dict[str, float]:
    """The statistics block of ``llama-perplexity --kl-divergence`` (``Same top p`` as a fraction)."""
    found: dict[str, float] = {}
    for key, pattern in _PATTERNS.items():
        m = re.search(pattern, text, re.M)
        if m:
            found[key] = float(m.group(1))
    if "same_top_p" in found:
        found["same_top_p"] = round(found["same_top_p"] / 100.0, 6)
    return found


def chunks_in(path: Path) -> int:
    """The chunk count a ``--kl-divergence-base`` file states (its header), bounded by its size."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:8] != MAGIC:
        raise InputError(f"{path}: not a llama-perplexity --kl-divergence-base file")
    return int.from_bytes(head[16:20], "little", signed=True)


def write_base(tool: Path, reference: Path, text: Path, out: Path, settings: Settings, *, log: Path) -> Base:
    """Run the reference once over ``text``; ``out`` is written (by the tool) and checked."""
    vocab = n_vocab(reference)
    t0 = time.monotonic()
    runner.stream([tool, "-m", reference, "-f", text, "-c", str(settings.ctx), "--chunks", str(settings.chunks),
                   "--kl-divergence-base", out], log_path=log)  # fmt: skip
    output = log.read_text(errors="replace")
    if not out.is_file():
        raise StepError(f"{tool.name} wrote no {out.name}; see {log}")
    chunks = chunks_in(out)
    want = base_bytes(ctx=settings.ctx, chunks=chunks, vocab=vocab)
    short = too_few(ctx=settings.ctx, chunks=chunks)
    if short:
        raise InputError(f"{text}: the text holds only {chunks} chunk(s) of {settings.ctx} tokens: {short}")
    if chunks < 1 or chunks > settings.chunks or out.stat().st_size != want:
        raise StepError(f"{out.name}: {out.stat().st_size} bytes, expected {want} for {chunks} chunk(s) of "
                        f"{settings.ctx} tokens and {vocab} tokens of vocabulary; see {log}")  # fmt: skip
    final = _FINAL.search(output)
    return Base(reference=str(reference), path=str(out), size=want, chunks=chunks, ctx=settings.ctx, n_vocab=vocab,
                ppl=float(final.group(1)) if final else None, seconds=round(time.monotonic() - t0, 3))  # fmt: skip


def measure(tool: Path, model: Path, base: Path, settings: Settings, *, log: Path) -> Measure:
    """One quant against the stored reference."""
    t0 = time.monotonic()
    runner.stream([tool, "-m", model, "-c", str(settings.ctx), "--kl-divergence-base", base, "--kl-divergence"],
                  log_path=log)  # fmt: skip
    found = parse(log.read_text(errors="replace"))
    missing = [k for k in _PATTERNS if k not in found]
    if missing:
        raise StepError(f"{tool.name} --kl-divergence on {model.name} printed no {', '.join(missing)}",
                        hint=f"its output: {log} (a vocabulary that differs from the reference's is one cause)")
    size, bpw = weights(model)
    return Measure(file=str(model), size=size, bits_per_weight=bpw, seconds=round(time.monotonic() - t0, 3), **found)


def weights(model: Path) -> tuple[int, float | None]:
    """File size (every shard) and real bits per weight: tensor bytes * 8 / elements."""
    from harness.gguf_files.split import open_model

    with open_model(model) as gf:
        elements = sum(t.n_elements for t in gf.tensors)
        nbytes = sum(t.nbytes for t in gf.tensors)
        return gf.size, (round(nbytes * 8 / elements, 4) if elements else None)


def run(tool: Path, models: list[Path], reference: Path, text: Path, settings: Settings, *, work: Path) -> Report:
    """``harness quality``: the reference once into ``work``, then each model."""
    from harness.build import disk

    work.mkdir(parents=True, exist_ok=True)
    base_path = work / f"{reference.stem}.kld-base.bin"
    disk.check([disk.Need("reference logits (--kl-divergence-base)", base_path,
                          base_bytes(ctx=settings.ctx, chunks=settings.chunks, vocab=n_vocab(reference)))])
    base = write_base(tool, reference, text, base_path, settings, log=work / f"{reference.stem}.kld-base.log")
    results = [measure(tool, m, base_path, settings, log=work / f"{m.stem}.kld.log") for m in models]
    return Report(evaluation=str(text), settings=settings, base=base, results=results)


def default_text() -> Path:
    """``data/evaluation.txt`` of this checkout: a fixed text, not the calibration text."""
    path = Path(__file__).resolve().parents[2] / "data" / "evaluation.txt"
    if not path.is_file():
        raise InputError(f"no evaluation text at {path}", hint="pass --text FILE")
    return path
