#!/usr/bin/env python3
"""What llama.cpp's RPC backend costs on one machine: local decode against rpc-servers on loopback.

  python benchmarks/rpc_bench.py --bin builds/demo/cpu/bin --model M.gguf [--rounds 5] [--n-predict 64]
  python benchmarks/rpc_bench.py --bin builds/cuda-rpc/cuda/bin --model M.gguf --gpu   # one GPU

``--bin`` is a build made with ``build.rpc: true`` (llama-server and ggml-rpc-server).  CPU modes:

- ``local``: llama-server alone on its CPU (``--device none``);
- ``rpc2``: every layer on two rpc-servers on 127.0.0.1, each offering its CPU
  (``rpc-server --device CPU``; head ``--rpc A,B --device RPC0,RPC1 -ngl all``, split by their
  free memory), the head only schedules;
- ``rpc2+cpu``: 2/3 of the layers on the two rpc-servers, the rest and the output on the head's CPU
  (``--rpc A,B --device RPC0,RPC1 -ngl N``).
The CPU modes name every device, so they mean the same on a GPU build's binaries.

With ``--gpu``: ``local`` is ``-ngl all`` on the GPU; ``rpc1`` is the same GPU behind one
rpc-server on loopback (``rpc-server --device CUDA0``; head ``--rpc A --device RPC0 -ngl all``).

The rpc-servers are started once (harness/serve/rpc/process.py) and stay up; each round starts every
mode's llama-server afresh, in turn (alternating, so drift hits all alike), and asks one fixed
prompt at temperature 0; the server's own timings give generation and prompt tok/s.  The text
must be the same in every mode.  Prints medians (generation also its range) and ratios to ``local`` as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.hosts import free_port  # noqa: E402
from harness.serve.rpc import process  # noqa: E402
from harness.smoke import decoder  # noqa: E402

PROMPT = ("Write a short paragraph about the history of the printing press, its inventor, "
          "and how it changed the spread of knowledge in Europe. ") * 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, required=True, help="a build's bin/ with llama-server and ggml-rpc-server")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="-t for llama-server and each rpc-server (default: theirs)")
    ap.add_argument("--layers", type=int, default=20, help="layers on the rpc-servers in rpc2+cpu (default 20)")
    ap.add_argument("--gpu", action="store_true", help="one GPU: local against the same GPU behind one rpc-server")
    args = ap.parse_args()
    server = args.bin / "llama-server"
    rpc_server = next(p for p in (args.bin / "ggml-rpc-server", args.bin / "rpc-server") if p.exists())
    threads = ["-t", str(args.threads)] if args.threads else []
    n_servers = 1 if args.gpu else 2
    tg: dict[str, list[float]] = {}
    pp: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    texts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        eps = []
        for i in range(n_servers):
            port = free_port("127.0.0.1")
            argv = process.command(rpc_server, "127.0.0.1", port, threads=args.threads or None,
                                   devices="CUDA0" if args.gpu else "CPU")
            rs = stack.enter_context(process.running(argv, "127.0.0.1", port, log_path=Path(tmp) / f"rpc{i}.log"))
            eps.append(rs.endpoint)
        rpc = ["--rpc", ",".join(eps)]
        if args.gpu:
            modes = {"local": ["-ngl", "all"], "rpc1": [*rpc, "--device", "RPC0", "-ngl", "all"]}
        else:
            modes = {"local": ["--device", "none", "-ngl", "0"],
                     "rpc2": [*rpc, "--device", "RPC0,RPC1", "-ngl", "all"],
                     "rpc2+cpu": [*rpc, "--device", "RPC0,RPC1", "-ngl", str(args.layers)]}
        for r in range(args.rounds):
            for name, flags in modes.items():
                got = decoder.decode(server, args.model, [*flags, *threads], n_predict=args.n_predict,
                                     log_path=Path(tmp) / f"{name}.log", prompt=PROMPT, timeout=600)
                assert got.tokens_per_s, f"{name}: no timings"
                tg.setdefault(name, []).append(got.tokens_per_s)
                pp.setdefault(name, []).append(got.prompt_per_s or 0.0)
                wall.setdefault(name, []).append(got.seconds)
                if texts.setdefault(name, got.content) != got.content or got.content != texts["local"]:
                    raise SystemExit(f"{name}: the text differs from local's at temperature 0")
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"model {args.model.name}, {args.rounds} alternating rounds, {args.n_predict} tokens, "
          f"{'one GPU' if args.gpu else 'CPU'}, rpc-servers on 127.0.0.1; same text in every mode")
    print()
    print("| mode | gen tok/s (min-max) | x local | prompt tok/s | x local | start+answer s |")
    print("| --- | --- | --- | --- | --- | --- |")
    g0, p0 = statistics.median(tg["local"]), statistics.median(pp["local"])
    for name in modes:
        g, p, w = statistics.median(tg[name]), statistics.median(pp[name]), statistics.median(wall[name])
        print(f"| {name} | {g:.1f} ({min(tg[name]):.1f}-{max(tg[name]):.1f}) | {g / g0:.2f} | {p:.1f} | {p / p0 if p0 else 0:.2f} | {w:.1f} |")
    return 0



if __name__ == "__main__":
    sys.exit(main())
