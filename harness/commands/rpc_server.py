"""harness rpc-server RECIPE: run the recipe's rpc-server (llama.cpp's RPC backend) until Ctrl-C.

It binds 127.0.0.1 unless told otherwise: rpc-server has no authentication and computes
whatever graph it is sent, so any other address needs ``--allow-remote`` and prints a
warning.  Prints the endpoint once it answers the RPC handshake, records itself in the
registry the head's checks read (harness/serve/rpc/endpoints.py), and on Ctrl-C stops its
process group (exit 130).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import console
from harness.build import published
from harness.commands.serve import handle_stop_signals, positive_int
from harness.errors import InputError, StepError
from harness.serve.rpc import DEFAULT_PORT

if TYPE_CHECKING:
    from harness.build.manifest import Manifest
    from harness.recipe.load import Recipe
    from harness.serve.rpc import endpoints, process

UNSAFE = ("rpc-server has no authentication and runs whatever tensors and graphs it is sent; anyone who can reach "
          "{host}:{port} can use this machine's memory and compute (llama.cpp tools/rpc/README.md: never on an open "
          "network)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rpc-server", help="run the recipe's rpc-server: this machine's devices for another llama-server",
                       usage="harness rpc-server RECIPE [--backend B] [--host 127.0.0.1] [--port N] [options]")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--backend", help="which build of the recipe (default: the first one built with build.rpc)")
    p.add_argument("--builds-dir", type=Path, metavar="DIR", help="where builds live (default: builds/)")
    p.add_argument("--host", default="127.0.0.1", help="IPv4 address to bind (default 127.0.0.1; others need --allow-remote)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}, rpc-server's own; 0: a free one)")
    p.add_argument("--allow-remote", action="store_true",
                   help="bind an address other machines can reach (no authentication: private networks only)")
    p.add_argument("--mem", type=positive_int, metavar="MiB",
                   help="memory to offer (only rpc-servers that still take --mem; see README)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (rpc-server's -t)")
    p.add_argument("--device", metavar="LIST", help="devices to offer, e.g. CUDA0,CUDA1 (rpc-server's -d)")
    p.add_argument("--cache", action="store_true", help="rpc-server's local tensor cache ($LLAMA_CACHE/rpc)")
    p.add_argument("--log", type=Path, metavar="FILE", help="rpc-server's log (default: a temp file, printed)")
    p.add_argument("--ready-timeout", type=float, default=60.0, metavar="S", help="seconds to wait for the handshake")
    p.add_argument("--json", action="store_true", help="print one JSON line (endpoint, pid, build, devices) when ready")


def run(args: argparse.Namespace) -> int:
    from harness.hosts import free_port, is_loopback
    from harness.recipe.load import load_recipe
    from harness.serve.rpc import endpoints, process

    recipe = load_recipe(args.recipe)
    host = _bind_address(args.host, args.allow_remote)
    if not 0 <= args.port < 65536:
        raise InputError(f"--port {args.port} is out of range")
    root, manifest = find_build(recipe, backend=args.backend, builds_dir=args.builds_dir)
    assert manifest.rpc is not None and manifest.rpc.server  # find_build returns only such builds
    binary = (root / "bin" / manifest.rpc.server).resolve()
    if args.mem is not None and not process.has_mem_flag(binary):
        raise InputError(f"--mem: this rpc-server ({binary.name}, RPC protocol {manifest.rpc.protocol}) has no "
                         "--mem option; it offers its devices' free memory",
                         hint="limit what the head puts there with llama-server's --tensor-split (harness serve ... -- "
                              "--tensor-split A,B,C), or pick devices with --device")
    build = endpoints.BuildId.from_manifest(root, manifest)
    port = args.port or free_port(host)
    if not is_loopback(host):
        console.warn(UNSAFE.format(host=host, port=port) + "; --allow-remote was given. Keep it on a private network "
                     "or firewalled to the head, or bind 127.0.0.1 and reach it through an SSH tunnel (see README)")
    argv = process.command(binary, host, port, threads=args.threads, devices=args.device, cache=args.cache, mem=args.mem)
    handle_stop_signals()
    with process.running(argv, host, port, log_path=args.log, ready_timeout=args.ready_timeout) as rs:
        entry = endpoints.register(host, port, rs.pid, binary, build, rs.log_path)
        try:
            _announce(rs, recipe, build, devices(rs.log_path), as_json=args.json)
            rs.service.wait_exit()  # returns only if it dies on its own
        finally:
            endpoints.unregister(entry, rs.pid)
        raise StepError(f"rpc-server exited on its own (code {rs.service.stop()}); log: {rs.log_path}")


def find_build(recipe: Recipe, *, backend: str | None, builds_dir: Path | None) -> tuple[Path, Manifest]:
    """The recipe's published build that has an rpc-server (the first backend built with build.rpc)."""
    seen: list[str] = []
    for b in [backend] if backend else recipe.spec.build.backends:
        root = published.build_root(builds_dir, recipe.name, b)
        manifest = published.read_manifest(root)  # another schema: a clean message
        if manifest is None:
            continue
        seen.append(str(root))
        server = manifest.rpc.server if manifest.rpc else None
        if server and (root / "bin" / server).exists():
            return root, manifest
    if seen:
        raise InputError(f"{', '.join(seen)}: built without the RPC backend (no rpc-server)",
                         hint=f"set build.rpc: true in {recipe.path} and run: harness build {recipe.path}")
    where = published.build_root(builds_dir, recipe.name, backend or recipe.spec.build.backends[0])
    raise InputError(f"no build in {where}", hint=f"set build.rpc: true and run: harness build {recipe.path}")


def devices(log_path: Path) -> list[dict[str, Any]]:
    """The devices rpc-server listed at start ("  CUDA0: NVIDIA H200 (143000 MiB, 142000 MiB free)")."""
    found = []
    text = log_path.read_text(encoding="utf-8", errors="replace")
    block = text.split("Devices:", 1)[1] if "Devices:" in text else ""
    for m in re.finditer(r"^\s+([\w.-]+): (.*) \((\d+) MiB, (\d+) MiB free\)$", block, re.MULTILINE):
        found.append({"name": m[1], "description": m[2], "total_mib": int(m[3]), "free_mib": int(m[4])})
    return found


def _bind_address(host: str, allow_remote: bool) -> str:
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise InputError(f"--host {host}: rpc-server binds an IPv4 address only (e.g. 127.0.0.1, 10.0.0.2)") from None
    if not address.is_loopback and not allow_remote:
        raise InputError(f"refusing to bind {host}: " + UNSAFE.format(host=host, port="<port>"),
                         hint="keep 127.0.0.1 and reach it through an SSH tunnel from the head, or pass --allow-remote "
                              "on a private network you trust")
    return host


def _announce(rs: process.RpcServer, recipe: Recipe, build: endpoints.BuildId, devs: list[dict[str, Any]], *,
              as_json: bool) -> None:
    where = "<this machine's address>" if rs.host == "0.0.0.0" else rs.host
    rpc_arg = f"{where}:{rs.port}@{build.stamp}"
    if as_json:
        sys.stdout.write(json.dumps({"ok": True, "endpoint": rs.endpoint, "host": rs.host, "port": rs.port, "pid": rs.pid,
                                     "protocol": rs.hello.protocol, "devices": devs, "build": build.to_json(),
                                     "rpc": rpc_arg, "argv": rs.argv, "log": str(rs.log_path)}) + "\n")
    else:
        console.info(f"rpc-server ready (pid {rs.pid}, RPC protocol {rs.hello.protocol}, build {build.stamp}); "
                     f"log: {rs.log_path}; Ctrl-C stops it")
        for d in devs:
            console.info(f"  {d['name']}: {d['description']} ({d['total_mib']} MiB, {d['free_mib']} MiB free)")
        console.info(f"on the head: harness serve {recipe.path} --model GGUF --rpc {rpc_arg}")
        sys.stdout.write(rs.endpoint + "\n")
    sys.stdout.flush()
