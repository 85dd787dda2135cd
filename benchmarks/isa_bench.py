#!/usr/bin/env python3
"""CPU decode speed of builds made with different instruction-set policies; prints ratios.

  python benchmarks/isa_bench.py --model M.gguf [--rounds 5] [--n-predict 64] \
      native=builds/demo/cpu/bin native-no-repack=builds/demo/cpu/bin:--no-repack \
      portable=/path/to/bin all-variants=/path/to/bin

Each ``NAME=BIN_DIR[:EXTRA,ARGS]`` is a build's bin/ (and llama-server flags); the first is the
reference.  Per round every build serves the model once (alternating, so drift hits all alike)
and answers one fixed prompt at temperature 0 (CPU builds: the weights on the CPU); the
server's own timings give generation and prompt tok/s.  Prints medians and ratios to the
reference, plus ggml's feature line and the CPU library each build loaded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.smoke import decoder  # noqa: E402

PROMPT = ("Write a short paragraph about the history of the printing press, its inventor, "
          "and how it changed the spread of knowledge in Europe. ") * 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="-t for llama-server (default: its own)")
    ap.add_argument("builds", nargs="+", metavar="NAME=BIN_DIR[:ARGS]")
    args = ap.parse_args()
    builds: dict[str, tuple[Path, list[str]]] = {}
    for spec in args.builds:
        name, _, rest = spec.partition("=")
        bin_dir, _, extra = rest.partition(":")
        builds[name] = (Path(bin_dir), [a for a in extra.split(",") if a])
    tg: dict[str, list[float]] = {n: [] for n in builds}
    pp: dict[str, list[float]] = {n: [] for n in builds}
    info: dict[str, str] = {}
    threads = ["-t", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (bin_dir, extra) in builds.items():
                trace = list(decoder.trace_flags(bin_dir / "llama-server")) if r == 0 else []  # ggml's feature line
                got = decoder.decode(bin_dir / "llama-server", args.model, [*threads, *extra, *trace],
                                     n_predict=args.n_predict, log_path=Path(tmp) / f"{name}.log", prompt=PROMPT)
                assert got.tokens_per_s, f"{name}: no timings"
                tg[name].append(got.tokens_per_s)
                pp[name].append(got.prompt_per_s or 0.0)
                if r == 0:
                    cpu = decoder.features(got.log).get("CPU", {})
                    info[name] = (" ".join(k for k, v in cpu.items() if v == "1") or "-") + (
                        f" [loaded libggml-cpu-{decoder.cpu_variant(got.log)}]" if decoder.cpu_variant(got.log) else "")
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    ref = next(iter(builds))
    print(f"model {args.model.name}, {args.rounds} alternating rounds, {args.n_predict} tokens, weights on the CPU")
    print(f"{'build':18} {'gen tok/s':>10} {'x ref':>6} {'prompt tok/s':>13} {'x ref':>6}  ggml CPU features")
    for name in builds:
        g, p = statistics.median(tg[name]), statistics.median(pp[name])
        gr, pr = g / statistics.median(tg[ref]), p / statistics.median(pp[ref]) if pp[ref][0] else 0.0
        print(f"{name:18} {g:10.1f} {gr:6.2f} {p:13.1f} {pr:6.2f}  {info[name]}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
