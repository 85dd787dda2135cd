"""The ``rpc`` check (builds with ``build.rpc``): the new rpc-server computes what the CPU computes.

The build's own rpc-server is started on a free loopback port, offering its CPU device; it
must answer the RPC handshake (protocol version, devices); then the tiny smoke model is decoded
by the new llama-server twice at temperature 0: on the local CPU (``--device none -ngl 0``) and
with every layer on the rpc-server (``--rpc 127.0.0.1:P --device RPC0 -ngl all``), whose log
(``GGML_RPC_DEBUG=1``) must show the tensors it received and the graphs it computed.  Same kernels
on both sides, so the two token sequences must be the same: what differs is the RPC transport, the
tensors serialized into rpc-server and its graph computed there.  (A GPU behind rpc-server
would compare GPU kernels with CPU ones, which need not agree to the last bit: that path is
measured by benchmarks/rpc_bench.py --gpu.)  About 3 s.  Skipped when the build has no
rpc-server or no llama-server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.hosts import free_port
from harness.serve.rpc import process
from harness.smoke import Context, SmokeFailure, decoder, tiny_model
from harness.smoke.results import RpcDevice, RpcResult, Skipped

N_PREDICT = 8


def run(ctx: Context) -> RpcResult | Skipped:
    t0 = time.monotonic()
    rpc_server = next((ctx.bin_dir / t for t in ctx.targets if t.endswith("rpc-server")), None)
    server = ctx.bin_dir / "llama-server"
    if rpc_server is None or not rpc_server.is_file() or not server.is_file():
        return Skipped(ok=True, skipped="the build has no rpc-server or no llama-server")
    ctx.work.mkdir(parents=True, exist_ok=True)
    model = ctx.work / "tiny-F16.gguf"
    if not model.exists():
        tiny_model.write(model)
    port = free_port("127.0.0.1")
    log = ctx.work / "rpc-server.log"
    try:
        argv = process.command(rpc_server, "127.0.0.1", port, devices="CPU")
        env = {**os.environ, "GGML_RPC_DEBUG": "1"}  # rpc-server logs each command: proof it computed
        with process.running(argv, "127.0.0.1", port, log_path=log, env=env) as rs:
            local = _decode(server, model, ["--device", "none", "-ngl", "0"], ctx.work / "rpc-local.log")
            remote = _decode(server, model, ["--rpc", rs.endpoint, "--device", "RPC0", "-ngl", "all"],
                             ctx.work / "rpc-remote.log")
    except HarnessError as exc:
        raise SmokeFailure("rpc", f"{exc}") from None
    served = log.read_text(errors="replace")
    if "[graph_compute]" not in served or "[set_tensor]" not in served:
        raise SmokeFailure("rpc", f"llama-server decoded with --device RPC0 but rpc-server received no tensors or "
                                  f"computed no graph; its log: {log}")
    if (local.token_ids, local.content) != (remote.token_ids, remote.content):
        raise SmokeFailure("rpc", f"the smoke model decoded differently through rpc-server: tokens "
                                  f"{list(remote.token_ids or [])} {remote.content!r} (local CPU: "
                                  f"{list(local.token_ids or [])} {local.content!r})",
                           details={"local": local.content, "rpc": remote.content,
                                    "local_tokens": list(local.token_ids or []), "rpc_tokens": list(remote.token_ids or [])})
    return RpcResult(ok=True, protocol=rs.hello.protocol, devices=[RpcDevice(**d.to_json()) for d in rs.hello.devices],
                     n_predict=N_PREDICT, local_tokens_per_s=local.tokens_per_s, rpc_tokens_per_s=remote.tokens_per_s,
                     seconds=round(time.monotonic() - t0, 2))


def _decode(server: Path, model: Path, args: list[str], log: Path) -> decoder.Decoded:
    got = decoder.decode(server, model, args, n_predict=N_PREDICT, log_path=log)
    why = decoder.problem(got, N_PREDICT)
    if why:
        raise SmokeFailure("rpc", f"{why} ({' '.join(args)}); log: {log}")
    return got
