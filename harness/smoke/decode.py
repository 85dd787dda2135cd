"""The ``decode`` check: the new binaries quantize and decode a tiny model in every kernel family.

One type per family of CPU kernels (F16; Q8_0; Q4_0 and Q4_1, the types ggml repacks for
AVX2/AVX-512 and AMX; Q4_K; IQ4_XS), made by the build's own ``llama-quantize --pure`` and
decoded for a few tokens at temperature 0.  The proof is the decoder's own count of the
tokens it generated, their ids and finite probabilities (see decoder.problem), never the
text.  GPU backends decode twice: offloaded
(``-ngl all``) and with the weights on the CPU (``-ngl 0``), since their CPU code is what
``-ot exps=CPU`` and ``--n-cpu-moe`` users run.

On a rebuild (``harness build`` after an edit) whose kernel libraries (``libggml*``, where the
kernels and quantization live, and ``libllama``, which drives quantizing and decoding) are the same
bytes as those a full proof passed with on this machine, one type is proven instead of all:
``REBUILD_TYPE``, made by the new ``llama-quantize`` and decoded by the new binaries in every
placement.  What differs (the tools, ``libllama-common``, the server) is what that one decode
runs; the kernels of the other types are the bytes already proven.  A build with no shared
kernel libraries (static) always gets the full proof.

A decoder killed by a signal raises :class:`DecodeCrash`, after the same decode was tried
once more with ``--no-repack`` (no AMX or repacked CPU buffers): the answer tells the
repacked-weight paths apart from the rest, and harness/build/run.py picks what to exclude.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from harness import atomic, backends, console, runner
from harness.errors import HarnessError, InputError
from harness.gguf_files.reader import open_gguf
from harness.smoke import Context, SmokeFailure, decoder, tiny_model
from harness.smoke.results import DecodedType, DecodeResult, Kernels, Skipped

# llama-quantize's type name -> the ggml type every 2-D weight gets with --pure
TYPES: dict[str, str] = {"F16": "F16", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q4_K_S": "Q4_K", "IQ4_XS": "IQ4_XS"}
N_PREDICT = 4
PROBE = "blk.0.ffn_down.weight"
# One CPU thread: the same kernels run (the proof is about instruction sets and kernels, not
# threading), and ggml's thread pool spins at its barriers: on a busy 2-core machine a decode
# of the tiny model took 0.23-1.6 s with the default threads, 0.08-0.11 s with one (RESULTS.md)
THREADS = ("-t", "1")
REBUILD_TYPE = "Q4_0"  # made by llama-quantize, and the type ggml repacks (AVX2/AVX-512, AMX)
KERNEL_LIBS = ("libggml*", "libllama.so*", "libllama.dylib", "libllama*.dll", "ggml*.dll", "llama.dll")


class DecodeCrash(SmokeFailure):
    """The decoder died by a signal; the facts a fallback needs to decide what to exclude."""

    def __init__(self, crash: decoder.Crashed, qtype: str, placement: str, no_repack_ok: bool | None,
                 variant: str | None) -> None:
        where = "offloaded to the GPU" if placement == "gpu" else "with its weights on the CPU"
        probe = {True: "with --no-repack it decoded fine: the CPU's repacked-weight path (AMX tiles, or the "
                       "AVX2/AVX-512 repack kernels) is at fault",
                 False: "with --no-repack it crashed too: plain CPU kernels are at fault",
                 None: "--no-repack was not tried"}[no_repack_ok]
        super().__init__("decode", f"{crash.binary} was killed by {crash.signal} decoding the {qtype} smoke model "
                                   f"{where}\n  {probe}\n  log (last lines):\n"
                                   + "\n".join("    " + line for line in crash.tail.splitlines()[-12:]),
                         details={"signal": crash.signal, "returncode": crash.returncode, "type": qtype,
                                  "placement": placement, "no_repack_ok": no_repack_ok, "cpu_variant": variant,
                                  "log": crash.log})
        self.crash = crash
        self.qtype = qtype
        self.placement = placement
        self.no_repack_ok = no_repack_ok
        self.variant = variant


def run(ctx: Context) -> DecodeResult | Skipped:
    t0 = time.monotonic()
    dec = decoder.binary(ctx.bin_dir)
    if dec is None:
        console.warn("decode smoke skipped: the build has neither llama-server nor llama-completion")
        return Skipped(ok=True, skipped="no llama-server or llama-completion among the targets")
    ctx.work.mkdir(parents=True, exist_ok=True)
    source = tiny_model.write(ctx.work / "tiny-F16.gguf")
    kernels = kernel_libs(ctx.bin_dir)
    rebuild = narrowed(ctx.proven, kernels)
    wanted = [REBUILD_TYPE] if rebuild else list(TYPES)
    made = _quantize(ctx, source, [t for t in wanted if t != "F16"])
    models = {t: source if t == "F16" else made[t] for t in wanted if t == "F16" or t in made}
    models = models or {"F16": source}  # narrowed, and no llama-quantize in the build
    # A CPU build gets no -ngl: parsing it loads the backends before logging starts, and
    # ggml's "loaded CPU backend from libggml-cpu-<variant>" line (all-variants) is lost.
    placements: dict[str, list[str]] = {"cpu": []}
    if backends.uses_gpu(ctx.backend):
        placements = {"gpu": ["-ngl", "all"], "cpu": ["-ngl", "0"]}
    types: dict[str, dict[str, DecodedType]] = {}
    first_log = ""
    for qtype, model in models.items():
        for placement, args in placements.items():
            log = ctx.work / f"decode-{qtype}-{placement}.log"
            trace = list(decoder.trace_flags(dec)) if not first_log else []  # ggml's feature line, once
            try:
                got = decoder.decode(dec, model, [*args, *THREADS, *trace], n_predict=N_PREDICT, log_path=log)
            except decoder.Crashed as crash:
                raise DecodeCrash(crash, qtype, placement, _probe(dec, model, args, ctx.work),
                                  decoder.cpu_variant(decoder._read(log))) from None
            except HarnessError as exc:
                raise SmokeFailure("decode", f"{dec.name} could not decode the {qtype} smoke model "
                                             f"({placement}): {exc}") from None
            why = decoder.problem(got, N_PREDICT)
            if why:
                raise SmokeFailure("decode", f"{dec.name} did not prove it decoded the {qtype} smoke model "
                                             f"({placement}): {why}; log: {log}",
                                   details={"type": qtype, "placement": placement, "cause": why, "log": str(log)})
            note = {"note": "no GPU device found: decoded on the CPU"} if placement == "gpu" and decoder.no_gpu(got.log) else {}
            types.setdefault(qtype, {})[placement] = DecodedType(
                tokens=got.tokens, token_ids=list(got.token_ids or []) or None, probs_checked=got.logprobs is not None,
                seconds=got.seconds, tokens_per_s=got.tokens_per_s, **note)
            first_log = first_log or got.log
    why_one = {"note": f"the kernel libraries are the bytes a full proof passed with on this machine: "
                       f"{REBUILD_TYPE} proven, not every type"} if rebuild else {}
    return DecodeResult(ok=True, decoder=dec.name, n_predict=N_PREDICT, types=types,
                        scope="rebuild" if rebuild else "full", kernels=kernels, **why_one,
                        features=decoder.features(first_log), cpu_variant=decoder.cpu_variant(first_log),
                        seconds=round(time.monotonic() - t0, 2))


def kernel_libs(bin_dir: Path) -> Kernels:
    """What a full proof covers: the sha256 of each kernel library, and the machine it ran on."""
    from harness.build import isa

    files = {p.name: atomic.sha256_file(p) for pattern in KERNEL_LIBS for p in sorted(bin_dir.glob(pattern))
             if p.is_file() and not p.is_symlink()}
    cpu = isa.detect_cpu()
    where = json.dumps([os.uname().nodename, cpu.model, cpu.arch, sorted(cpu.flags or cpu.extensions)])
    return Kernels(files=files, machine=hashlib.sha256(where.encode()).hexdigest()[:16])


def narrowed(proven: DecodeResult | Skipped | None, kernels: Kernels) -> bool:
    """Whether one type proves this build: the previous decode proof passed, full or itself
    narrowed (then a full one passed before it with the same bytes), with these kernel libraries
    on this machine."""
    return (isinstance(proven, DecodeResult) and proven.ok and bool(kernels.files)
            and proven.scope in ("full", "rebuild") and proven.kernels == kernels)


def _quantize(ctx: Context, source: Path, qtypes: list[str]) -> dict[str, Path]:
    """The smoke model in each type, by the build's own llama-quantize (every output parsed and checked)."""
    quantize = ctx.bin_dir / "llama-quantize"
    if not quantize.is_file():
        console.warn("decode smoke: no llama-quantize in the build, decoding F16 only")
        return {}
    out: dict[str, Path] = {}
    for qtype in qtypes:
        ggml = TYPES[qtype]
        target = ctx.work / f"tiny-{qtype}.gguf"
        res = runner.run([quantize, "--pure", source, target, qtype, "1"], check=False, timeout=300)
        if res.returncode < 0:
            raise SmokeFailure("decode", f"llama-quantize was killed by {decoder.signal_name(res.returncode)} "
                                         f"quantizing the smoke model to {qtype}",
                               details={"signal": decoder.signal_name(res.returncode), "type": qtype,
                                        "binary": "llama-quantize"})
        if res.returncode != 0:
            raise SmokeFailure("decode", f"llama-quantize exited {res.returncode} making {qtype}:\n"
                               + "\n".join((res.stdout + res.stderr).splitlines()[-10:]))
        try:
            with open_gguf(target) as f:
                found = f.tensor(PROBE)
                n = len(f.tensors)
        except InputError as exc:
            raise SmokeFailure("decode", f"llama-quantize exited 0 but wrote an unreadable {qtype} file: {exc}") from None
        if n != tiny_model.N_TENSORS or found is None or found.type_name != ggml:
            raise SmokeFailure("decode", f"llama-quantize's {qtype} file has {n} tensors (expected {tiny_model.N_TENSORS}) "
                                         f"and {PROBE} as {found.type_name if found else 'missing'} (expected {ggml})")
        out[qtype] = target
    return out


def _probe(dec: Path, model: Path, args: list[str], work: Path) -> bool | None:
    """Does the same decode pass with --no-repack?  (None: it failed some other way.)"""
    try:
        decoder.decode(dec, model, [*args, *THREADS, "--no-repack"], n_predict=N_PREDICT, log_path=work / "decode-no-repack.log")
    except decoder.Crashed:
        return False
    except HarnessError:
        return None
    return True
