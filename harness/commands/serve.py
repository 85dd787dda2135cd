"""harness serve RECIPE --model GGUF: run the recipe's llama-server with its speculative flags.

Flags come from the recipe's ``serve:`` section, overridden by ``--mtp``/``--spec``/
``--draft``/``--draft-n-max``; everything after ``--`` goes to llama-server as is
(``args.server_args``, split off by ``harness.cli.Parser``'s ``passthrough``).
Prints the URL once ``/health`` answers (a JSON line with ``--json``) and runs until
Ctrl-C, which stops the server's whole process group (exit 130).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from harness import console, runner
from harness.errors import CommandFailed, InputError
from harness.serve.rpc import head as rpc_head

if TYPE_CHECKING:
    from harness.recipe.load import Recipe
    from harness.serve import plan as serve_plan
    from harness.serve.rpc.endpoints import Checked
    from harness.serve.server import Server


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the recipe's llama-server (MTP / speculative flags from the recipe)",
        usage="harness serve RECIPE --model GGUF [options] [-- LLAMA_SERVER_ARGS...]",
        passthrough="server_args",
    )
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--model", "-m", required=True, type=Path, metavar="GGUF")
    spec = p.add_mutually_exclusive_group()
    spec.add_argument(
        "--mtp", action="store_true", help="speculate with the model's MTP layers (--spec-type draft-mtp)"
    )
    spec.add_argument(
        "--spec", metavar="TYPE", help="a --spec-type of this llama-server (comma list), or none"
    )
    p.add_argument(
        "--draft",
        type=Path,
        metavar="GGUF",
        help="draft model (-md); implies draft-simple unless a draft-* type is given",
    )
    p.add_argument(
        "--draft-n-max",
        type=positive_int,
        metavar="N",
        help="draft depth (the flag that governs the chosen type)",
    )
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="serve what harness bench chose (its profile.json): the category's mode, depth and flags")
    p.add_argument("--category", metavar="C", help="which category of --profile (default: all)")
    add_server_options(p)
    rpc_head.add_options(p)
    p.add_argument(
        "--host", help="bind address (default 127.0.0.1; others need an API key)"
    )
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--api-key-file", type=Path, metavar="FILE", help="API key (else $LLAMA_API_KEY)")
    p.add_argument("--log", type=Path, metavar="FILE", help="server log (default: a temp file, printed)")
    p.add_argument(
        "--ready-timeout", type=float, default=300.0, metavar="S", help="seconds to wait for /health"
    )
    p.add_argument("--json", action="store_true", help="print one JSON line (url, pid, argv, log) when ready")
    p.add_argument("--prompt", metavar="TEXT",
                   help="ask once, print the completion and stop the server (a quick check of a build and a model)")
    p.add_argument("--n-predict", type=positive_int, default=48, metavar="N", help="tokens for --prompt (default 48)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the llama-server command line (checked against its --help) and start nothing")


def add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parallel", "-np", type=positive_int, metavar="N",
                   help="slots (llama-server -np N; bench: N concurrent clients too); default: llama-server's")
    p.add_argument("--backend", help="which build of the recipe (default: the first one built)")
    p.add_argument("--builds-dir", type=Path, metavar="DIR", help="where builds live (default: builds/)")


def run(args: argparse.Namespace) -> int:
    from harness.recipe.load import load_recipe
    from harness.serve import plan as serve_plan
    from harness.serve import server

    args.host = args.host or server.DEFAULT_HOST
    recipe = load_recipe(args.recipe)
    model = existing_file(args.model, "--model")
    key = server.api_key(args.api_key_file)
    server.require_key(args.host, key)  # before anything slow
    binary, backend = server.find_binary(recipe, backend=args.backend, builds_dir=args.builds_dir)
    gguf_model(model)
    if args.profile is not None:
        command = _profile_plan(args, recipe, binary, backend, model)
        if args.dry_run:
            return _print_plan(command, host=args.host, port=args.port, key=key, as_json=args.json)
        handle_stop_signals()
        return _serve(args, binary, backend, model, command.args, key, [])
    if args.category is not None:
        raise InputError("--category picks a category of --profile FILE, and no --profile is given")
    rpc = [] if args.dry_run else rpc_head.checked(args, recipe, backend)
    rpc_flags = rpc_head.planned(args, recipe, backend) if args.dry_run else rpc_head.flags(rpc)
    command = serve_plan.plan(recipe, binary, backend, model, spec=_spec_choice(args), draft=args.draft,
                              depth=args.draft_n_max, extra=[*rpc_flags, *args.server_args],
                              parallel=args.parallel)  # fmt: skip
    if args.dry_run:
        return _print_plan(command, host=args.host, port=args.port, key=key, as_json=args.json)
    server_args = command.args
    handle_stop_signals()
    try:
        return _serve(args, binary, backend, model, server_args, key, rpc)
    except CommandFailed as exc:  # llama-server died: say which rpc-server went away, if one did
        exc.hint = rpc_head.gone(rpc) or exc.hint
        raise


def _serve(args: argparse.Namespace, binary: Path, backend: str, model: Path, server_args: list[str],
           key: str | None, rpc: list[Checked]) -> int:
    from harness.serve import server

    with server.running_server(
        binary, model, server_args, host=args.host, port=args.port, key=key,
        log_path=args.log, ready_timeout=args.ready_timeout,
    ) as srv:  # fmt: skip
        if args.prompt is not None:
            return _ask(srv, args.prompt, args.n_predict, as_json=args.json)
        if args.json:
            sys.stdout.write(json.dumps({"ok": True, **srv.to_json(), "backend": backend,
                                         **({"rpc": [c.to_json() for c in rpc]} if rpc else {})}) + "\n")
        else:
            console.info(f"llama-server ready (pid {srv.pid}); log: {srv.log_path}; Ctrl-C stops it")
            sys.stdout.write(srv.url + "\n")
        sys.stdout.flush()
        srv.service.wait_exit()  # only returns if the server dies on its own
    code = srv.process.returncode
    if code != 0:
        raise CommandFailed(srv.argv, code, runner.log_tail(srv.log_path), log=str(srv.log_path))
    return 0


def _profile_plan(args: argparse.Namespace, recipe: Recipe, binary: Path, backend: str,
                  model: Path) -> serve_plan.Plan:  # fmt: skip
    """The command line a bench measured for the category (after the profile is checked against
    this model and build), plus the arguments after ``--``; the speculative options cannot be mixed in."""
    from harness.bench import profile as profiles
    from harness.build import published
    from harness.serve import plan as serve_plan
    from harness.serve import server_help

    mixed = [flag for flag, given in (("--mtp", args.mtp), ("--spec", args.spec), ("--draft", args.draft),
                                      ("--draft-n-max", args.draft_n_max), ("--parallel", args.parallel),
                                      ("--rpc", args.rpc)) if given]  # fmt: skip
    if mixed:
        raise InputError(f"--profile sets the speculative flags, slots and rpc-servers it was measured with; "
                         f"drop {', '.join(mixed)}", hint="or serve without --profile")  # fmt: skip
    prof = profiles.load(args.profile)
    root = published.build_root(args.builds_dir, recipe.name, backend)
    profiles.applies(prof, args.profile, model=model, build=profiles.build_of(root, backend))
    category, choice = profiles.choice(prof, args.profile, args.category)
    offered = server_help.read(binary)
    offered.check(choice.args, origin=f"{args.profile}: {category}")
    offered.check(args.server_args, origin="the arguments after --")
    serve_plan.warn_untyped_draft(args.server_args)
    measured = f", {choice.verdict}" + (f" {choice.speedup:.2f}x" if choice.speedup else "") if choice.verdict else ""
    console.info(f"profile {args.profile}: {category}: {choice.mode}{measured}")
    return serve_plan.Plan(binary, backend, model, [*choice.args, *args.server_args])


def _spec_choice(args: argparse.Namespace) -> list[str] | None:
    """``--mtp`` / ``--spec`` as names (None: the recipe's ``serve.spec_type``)."""
    if args.mtp:
        return ["draft-mtp"]
    if args.spec is not None:
        return re.split(r"[,+]", args.spec)
    return None


def _print_plan(command: serve_plan.Plan, *, host: str, port: int, key: str | None, as_json: bool) -> int:
    argv = command.argv(host, port or "PORT")
    if key:
        argv += ["--api-key-file", "KEYFILE"]
    if as_json:
        console.emit_json({"argv": argv, "binary": str(command.binary), "backend": command.backend,
                           "model": str(command.model), "draft": str(command.draft) if command.draft else None,
                           "draft_status": command.draft_status, "checked": True})  # fmt: skip
    else:
        console.out(shlex.join(argv))
    return 0


def _ask(srv: Server, prompt: str, n_predict: int, *, as_json: bool) -> int:
    """One completion at temperature 0 (llama-server's /completion), printed; the server stops after."""
    import requests

    try:
        resp = requests.post(f"{srv.url}/completion", headers=srv.headers(), timeout=600,
                             json={"prompt": prompt, "n_predict": n_predict, "temperature": 0, "seed": 1})
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise CommandFailed(srv.argv, 1, f"{exc}\n" + runner.log_tail(srv.log_path), log=str(srv.log_path)) from None
    body = resp.json()
    timings = body.get("timings") or {}
    if as_json:
        console.emit_json({"prompt": prompt, "content": body.get("content", ""), "timings": timings,
                           "model": body.get("model"), "log": str(srv.log_path)})
    else:
        console.out(prompt + body.get("content", ""))
        console.info(f"{body.get('tokens_predicted', 0)} tokens at {timings.get('predicted_per_second', 0):.1f} tok/s "
                     f"(prompt {timings.get('prompt_per_second', 0):.1f} tok/s); log: {srv.log_path}")
    return 0


def handle_stop_signals() -> None:
    """SIGINT -> KeyboardInterrupt (exit 130) even when started in the background, where
    shells ignore it; SIGTERM -> exit 143.  Both unwind through running_server, which
    stops the server's group."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def existing_file(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such file")
    return path.resolve()


def gguf_model(path: Path) -> None:
    """``path`` read as llama.cpp's loader would read it (header, metadata, tensor table; every shard
    of a split set) before llama-server is started: a bad file is exit 2 naming the file or shard,
    not llama-server's log.  Metadata only: well under a second for a 262,144-token vocabulary."""
    from harness.gguf_files.split import open_model

    with open_model(path):
        pass


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
