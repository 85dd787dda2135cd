"""harness bench RECIPE --model GGUF: tokens/s, draft acceptance and speedup per task category.

One llama-server per speculative mode (and depth, with ``--sweep``), each command line built
by ``serve_plan.plan`` exactly as ``harness serve`` builds it; the built-in prompt suite plus
``--prompts DIR``, deterministic sampling, ``--repeat`` interleaved rounds, paired verdicts.
Writes bench.json, bench.png, profile.json and llama-swap.yaml to ``--out``; prints a table
and, per category, the flags to serve with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import console
from harness.commands.serve import (
    add_server_options,
    existing_file,
    gguf_model,
    handle_stop_signals,
    positive_int,
)
from harness.serve.rpc import head as rpc_head

if TYPE_CHECKING:
    from harness.bench.profile import Profile
    from harness.bench.report import Best

DEFAULT_SPEC = "none,ngram-simple,ngram-mod"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure speculative modes per task category against the recipe's llama-server",
        usage="harness bench RECIPE --model GGUF [options] [-- LLAMA_SERVER_ARGS...]",
        passthrough="server_args",
    )
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--model", "-m", required=True, type=Path, metavar="GGUF")
    p.add_argument("--spec", metavar="MODES",
                   help=f"comma list: none, mtp, or --spec-type names; a+b combines (default: {DEFAULT_SPEC}"
                        " plus the recipe's serve.spec_type)")  # fmt: skip
    depth = p.add_mutually_exclusive_group()
    depth.add_argument(
        "--sweep", metavar="draft-n-max=A..B", help="run each mode at each depth (e.g. draft-n-max=1..6)"
    )
    depth.add_argument("--draft-n-max", type=positive_int, metavar="N", help="one draft depth for every mode")
    p.add_argument("--draft", type=Path, metavar="GGUF", help="draft model for draft-* modes (-md)")
    p.add_argument("--prompts", type=Path, metavar="DIR", help="more prompts: DIR/<category>/*.txt")
    p.add_argument("--no-builtin", action="store_true", help="only the prompts of --prompts")
    p.add_argument("--categories", metavar="LIST", help="comma list of categories to run (default: all)")
    p.add_argument(
        "--n-predict", type=positive_int, default=128, metavar="N", help="tokens per request (default 128)"
    )
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=3,
        metavar="K",
        help="rounds (default 3): each starts every mode's server afresh and runs every prompt once; every prompt "
             "in every round is paired with none's same prompt in the same round",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="bench.json, bench.png, logs/ (default: reports/bench/<recipe>-<time>)",
    )
    p.add_argument("--json", action="store_true", help="print bench.json's content")
    add_server_options(p)
    rpc_head.add_options(p)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness import atomic
    from harness.bench import chart, modes, prompts, report, stats
    from harness.bench import profile as profiles
    from harness.bench.runner import Settings, run_plan
    from harness.recipe.load import load_recipe
    from harness.serve import plan as serve_plan
    from harness.serve import server

    recipe = load_recipe(args.recipe)
    model = existing_file(args.model, "--model")
    draft = existing_file(args.draft, "--draft") if args.draft else None
    suite = prompts.load_suite(
        args.prompts, categories=_csv(args.categories) or None, builtin=not args.no_builtin
    )
    binary, backend = server.find_binary(recipe, backend=args.backend, builds_dir=args.builds_dir)
    gguf_model(model)
    serve = recipe.spec.serve
    names = _csv(args.spec) if args.spec else [*_csv(DEFAULT_SPEC), *_csv(serve.spec_type or "")]
    depths: list[int | None] = (
        list(modes.parse_sweep(args.sweep)) if args.sweep else [args.draft_n_max or serve.draft_n_max]
    )
    plan = modes.plan(names, server.spec_types(binary), depths)
    rpc = rpc_head.checked(args, recipe, backend)
    commands = {  # what `harness serve` would run for each mode, flag for flag
        m.label: serve_plan.plan(recipe, binary, backend, model, spec=list(m.types), draft=draft, depth=m.depth,
                                 extra=[*rpc_head.flags(rpc), *args.server_args], parallel=args.parallel).args
        for m in plan
    }  # fmt: skip
    settings = Settings(n_predict=args.n_predict, repeat=args.repeat, seed=args.seed, clients=args.parallel or 1)
    out: Path = args.out or Path("reports/bench") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    handle_stop_signals()

    total = len(plan) * len(suite) * settings.repeat
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console.err_console(), transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("bench", total=total)
        argvs, samples = run_plan(
            binary, model, commands, plan, suite, settings, log_dir=out / "logs",
            on_start=lambda m, r: progress.update(task, description=console.literal(f"{m.label} (round {r + 1}): starting")),
            on_sample=lambda s: progress.update(task, advance=1,
                                                description=console.literal(f"{s.mode}: {s.category}/{s.prompt}")),
        )  # fmt: skip

    rows = report.summarise(samples)
    picks = report.best(rows, plan)
    data: dict[str, Any] = {
        "recipe": recipe.name,
        "model": str(model),
        "llama_server": str(binary),
        "backend": backend,
        "version": _version(binary),
        "rpc": [c.to_json() for c in rpc],
        "settings": {
            "n_predict": settings.n_predict, "repeat": settings.repeat, "seed": settings.seed,
            "parallel": args.parallel, "clients": settings.clients,
            "temperature": 0.0, "cache_prompt": False,
            "prompts": [f"{p.category}/{p.name}" for p in suite],
        },
        "modes": [
            {"label": m.label, "spec": m.name, "types": list(m.types), "depth": m.depth, "argv": argvs[m.label]}
            for m in plan
        ],
        "statistics": {
            "method": "median of paired ratios (prompt x round against none's same prompt and round); "
                      "two-level percentile bootstrap over prompts, then rounds",
            "level": stats.LEVEL, "resamples": stats.RESAMPLES, "seed": stats.SEED, "min_pairs": stats.MIN_PAIRS,
            "baseline_spread": report.baseline_spread(rows), "noisy": stats.noisy(report.baseline_spread(rows))
            or abs((report.idle_drift(samples) or 1.0) - 1.0) > stats.NOISY_CV,
            "noisy_above": stats.NOISY_CV, "idle_drift": report.idle_drift(samples),
        },
        "rows": [r.to_json() for r in rows],
        "slots": report.per_slot(samples),
        "best": [b.to_json() for b in picks],
        "best_depths": report.best_depths(rows) if args.sweep else None,
        "samples": [s.to_json() for s in samples],
        "json": str(out / "bench.json"),
        "chart": str(out / "bench.png"),
    }  # fmt: skip
    prof = _profile(recipe.name, model, binary, backend, args, commands, picks, out)
    data["profile"] = str(out / "profile.json")
    data["llama_swap"] = str(out / "llama-swap.yaml")
    atomic.write_json(out / "bench.json", data)
    profiles.write(out / "profile.json", prof)
    atomic.write_text(out / "llama-swap.yaml", profiles.llama_swap(prof, binary, model))
    chart.write_png(rows, out / "bench.png", title=f"{recipe.name}: {model.name} ({backend})")
    if args.json:
        console.emit_json(data)
        return 0
    # a pipe or a file gets the whole table (rich would squeeze it into 80 columns)
    Console(highlight=False, width=None if sys.stdout.isatty() else 160).print(report.table(rows))
    for line in report.noise_lines(rows, settings.repeat, report.idle_drift(samples)):
        (console.warn if line.startswith("the machine") else console.out)(line)
    console.out()
    if any(r.spec != "none" for r in rows):  # with --spec none alone there is nothing to pick from
        console.out("best per category:")
        for line in report.recommendations(picks, recipe=args.recipe, model=str(args.model)):
            console.out("  " + line)
        console.out()
    if rpc:
        console.out("split over rpc-servers: " + ", ".join(f"{c.endpoint.address} ({c.verified})" for c in rpc))
    console.out(f"wrote {out / 'bench.json'}, {out / 'bench.png'}, {out / 'profile.json'} "
                f"(harness serve {args.recipe} --model {args.model} --profile {out / 'profile.json'} --category C) "
                f"and {out / 'llama-swap.yaml'}")
    return 0


def _profile(recipe: str, model: Path, binary: Path, backend: str, args: argparse.Namespace,
             commands: dict[str, list[str]], picks: list[Best], out: Path) -> Profile:  # fmt: skip
    """Per category: the pick, or ``none`` with the closest mode named."""
    from harness.bench import profile as profiles
    from harness.build import published
    choices = {}
    for b in picks:
        r = b.row
        label = b.mode.label if b.mode is not None else "none"
        choices[b.category] = profiles.Choice(
            mode=label, types=list(b.mode.types) if b.mode else [], depth=b.mode.depth if b.mode else None,
            verdict=r.verdict if r else None, speedup=r.speedup if r else None, low=r.low if r else None,
            high=r.high if r else None, closest=r.mode if r and b.mode is None else None, args=commands[label],
        )  # fmt: skip
    root = published.build_root(args.builds_dir, recipe, backend)
    return profiles.Profile(
        recipe=recipe, model=str(model), model_sha256=profiles.sha256(model), build=profiles.build_of(root, backend),
        hardware=profiles.hardware(args.server_args), bench=str(out / "bench.json"), categories=choices,
    )  # fmt: skip


def _csv(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _version(binary: Path) -> str:
    from harness import runner

    result = runner.run([binary, "--version"], check=False, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return next((line.strip() for line in lines if line.startswith("version:")), "unknown")
