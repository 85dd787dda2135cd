"""harness bisect RECIPE --check CHECK: the first upstream commit where the recipe's stack turns bad."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bisect", help="find the upstream commit that broke the stack (apply, build, smoke, bench, run:CMD)")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--check", required=True, metavar="CHECK",
                   help="apply | build | smoke | run:COMMAND (0 good, 125 skip, 1-127 bad, as git bisect run) | "
                        "'bench:tokens_per_second<VALUE' (bad below VALUE; >VALUE: bad above)")
    p.add_argument("--good", metavar="SHA", help="a good upstream commit (default: the lock's base)")
    p.add_argument("--bad", metavar="SHA", help="a bad upstream commit (default: the recipe's upstream ref now)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps (the answer is then a range)")
    p.add_argument("--backend", metavar="B", help="build/smoke: the backend (default: the recipe's first)")
    p.add_argument("--smoke-model", type=Path, help="smoke: GGUF for the quantize/serve checks")
    p.add_argument("--model", "-m", type=Path, metavar="GGUF", help="bench: the GGUF llama-server serves")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="build/smoke: parallel compile jobs")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from harness import bisect, bisect_checks, lock
    from harness.errors import InputError
    from harness.recipe import load_recipe

    check = bisect_checks.parse(args.check)
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps {args.max_steps}: give 1 or more", key="--max-steps")
    if check.kind == "bench" and args.model is None:
        raise InputError(f"--check {args.check}: give --model GGUF (what llama-server serves at each step)", key="--model")
    if args.model is not None and not args.model.is_file():
        raise InputError(f"--model {args.model}: no such file", key="--model")
    recipe = load_recipe(args.recipe)
    if args.backend is not None and args.backend not in recipe.spec.build.backends:
        raise InputError(f"--backend {args.backend}: the recipe builds {', '.join(recipe.spec.build.backends)}",
                         key="--backend")
    the_lock = lock.ensure(recipe, frozen=True)  # a bisection never writes the lock
    env = bisect_checks.Env(recipe=recipe, backend=args.backend, smoke_model=args.smoke_model, jobs=args.jobs,
                            model=args.model.resolve() if args.model else None)
    result = bisect.run(recipe, the_lock, check, good=args.good, bad=args.bad, max_steps=args.max_steps, env=env)
    if args.json:
        console.emit_json(result.model_dump(by_alias=True))
        return 0
    for line in bisect.text(result):
        console.out(line)
    return 0
