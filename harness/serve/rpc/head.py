"""The head's side: ``--rpc`` options of serve and bench, and the endpoints checked for a build.

The endpoints come from ``--rpc`` (repeatable, comma lists) or else the recipe's
``serve.rpc``; each is checked against the head's published build (harness/serve/rpc/endpoints.py)
before llama-server is started with ``--rpc``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness import console

if TYPE_CHECKING:
    from harness.hosts import Endpoint
    from harness.recipe.load import Recipe
    from harness.serve.rpc import endpoints


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc", action="append", metavar="HOST:PORT[@STAMP],...",
                   help="rpc-servers to split the model across (llama-server --rpc), as harness rpc-server prints "
                        "them; default: the recipe's serve.rpc")
    p.add_argument("--rpc-unverified", action="store_true",
                   help="accept rpc-servers whose llama.cpp commit cannot be checked (protocol check only)")


def _head(args: argparse.Namespace, recipe: Recipe, backend: str) -> tuple[list[Endpoint], endpoints.BuildId | None]:
    """The endpoints asked for and the head's build identity (None when none are asked for)."""
    from harness.build import published
    from harness.hosts import parse_list
    from harness.serve.rpc import endpoints

    eps = parse_list(args.rpc if args.rpc else recipe.spec.serve.rpc)
    if not eps:
        return [], None
    root = published.build_root(args.builds_dir, recipe.name, backend)
    manifest = published.read_manifest(root)
    if manifest is None:
        raise published.not_built(recipe, "llama-server", backend=backend, builds_dir=args.builds_dir)
    return eps, endpoints.BuildId.from_manifest(root, manifest)


def checked(args: argparse.Namespace, recipe: Recipe, backend: str) -> list[endpoints.Checked]:
    """The endpoints asked for, each checked against the head's build; [] when none."""
    from harness.serve.rpc import endpoints

    eps, head = _head(args, recipe, backend)
    if head is None:
        return []
    passed = endpoints.check(eps, head, unverified=args.rpc_unverified)
    for c in passed:
        mem = ", ".join(f"{d.free >> 20} of {d.total >> 20} MiB free" for d in c.devices) or "no devices listed"
        console.info(f"rpc {c.endpoint.address}: protocol {c.protocol}, {mem}; llama.cpp checked by {c.verified}")
    return passed


def planned(args: argparse.Namespace, recipe: Recipe, backend: str) -> list[str]:
    """The dry run's ``--rpc``: the flags a run would pass, after the check that the head's build has
    an RPC backend; no rpc-server is contacted."""
    from harness.serve.rpc import endpoints

    eps, head = _head(args, recipe, backend)
    if head is None:
        return []
    endpoints.check([], head)  # the backend check alone
    return endpoints.flags(eps)


def flags(passed: Sequence[endpoints.Checked]) -> list[str]:
    from harness.serve.rpc import endpoints

    return endpoints.flags([c.endpoint for c in passed])


def gone(passed: Sequence[endpoints.Checked], timeout: float = 2.0) -> str | None:
    """After llama-server died: which rpc-servers no longer answer (None: all do, or none used)."""
    from harness.serve.rpc import protocol

    lines = []
    for c in passed:
        try:
            protocol.hello(c.endpoint.host, c.endpoint.port, timeout=timeout)
        except protocol.Unreachable as exc:
            lines.append(f"rpc-server {c.endpoint.address} is gone ({str(exc).split(': ', 1)[-1]})")
        except (protocol.Busy, protocol.HandshakeFailed):
            continue
    return "; ".join(lines) or None

