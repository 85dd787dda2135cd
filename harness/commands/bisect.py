"""harness bisect RECIPE --check CHECK: the first upstream commit where the recipe's stack turns bad."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import console

DESCRIPTION = """\
Find the first upstream commit where the recipe's locked stack stops applying, building, passing
its smoke checks, reaching a llama-server speed, or passing your script, as `git bisect run
--first-parent` would: each step applies the whole stack to a candidate commit in a private tree
under <cache>/bisect/ (the recipe's tree, builds/ and lock are never touched). The bad end is
checked first, then the good end (one logged step each): a bad end that passes, or a good end
that already fails, stops before bisecting.

--good and --bad take what git bisect takes: a full SHA, a branch or tag of the recipe's upstream
(b6019, master; looked up with git ls-remote, a name winning over an abbreviated SHA as in git), or
an abbreviated SHA of a commit already fetched (the bad end's history).

run:COMMAND runs in the stacked tree (its working directory), with HARNESS_BISECT_TREE and
HARNESS_BISECT_UPSTREAM set; a program path with a / is taken from the current directory, a bare
name from PATH. Its exit status, as git bisect run reads it: 0 good, 125 skip (cannot be judged),
1-127 bad; 128 and above (a signal) stops the bisection, and so do 126/127 at the good end (the
check itself cannot run: git's "bogus exit code").

Exit codes: 0 one first bad commit found; 1 no single answer (only skipped commits left, or
--max-steps ran out: the commits it may be are listed; with --json "ok": false, "is_range": true),
an end that says the other thing, a check that itself failed, or any other failed step; 2 bad
input (a check, SHA or ref, a script that is missing or not executable, no lock)."""

EXAMPLE = """\
example:
  harness bisect recipes/demo.yaml --check apply                  # lock's base .. upstream ref now
  harness bisect recipes/demo.yaml --check build --good b6019 --bad b6100
  harness bisect recipes/demo.yaml --check run:./check.sh --good 1a2b3c4d --json
  harness bisect recipes/demo.yaml --check 'bench:tokens_per_second<40' -m model.gguf --max-steps 6"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bisect", help="find the upstream commit that broke the stack (apply, build, smoke, bench, run:CMD)",
                       description=DESCRIPTION, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--check", required=True, metavar="CHECK",
                   help="apply | build | smoke | run:COMMAND (0 good, 125 skip, 1-127 bad, as git bisect run) | "
                        "'bench:tokens_per_second<VALUE' (bad below VALUE; >VALUE: bad above)")
    p.add_argument("--good", metavar="REV", help="a good upstream commit: SHA, tag or branch (default: the lock's base)")
    p.add_argument("--bad", metavar="REV",
                   help="a bad upstream commit: SHA, tag or branch (default: the recipe's upstream ref now)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="stop after N bisection steps, the two end checks not counted (the answer is then a range)")
    p.add_argument("--backend", metavar="B", help="build/smoke: the backend (default: the recipe's first)")
    p.add_argument("--smoke-model", type=Path, help="smoke: GGUF for the quantize/serve checks")
    p.add_argument("--model", "-m", type=Path, metavar="GGUF", help="bench: the GGUF llama-server serves")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="build/smoke: parallel compile jobs")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import shlex

    from harness.bisect import checks as bisect_checks
    from harness.bisect import report as bisect_report
    from harness.bisect import run as bisect
    from harness.errors import InputError
    from harness.recipe.load import load_recipe
    from harness.source import lock, locking

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
    the_lock = lock.read(recipe.lock_path)  # a bisection never writes the lock
    command = f"harness lock {shlex.quote(str(recipe.path))}"
    if the_lock is None:
        raise InputError(f"bisect needs the recipe's lock: run `{command}` first")
    problems = locking.check(recipe, the_lock)
    if problems:
        raise InputError(f"{recipe.lock_path} disagrees with the recipe:\n  " + "\n  ".join(problems),
                         hint=f"run `{command}` first (bisect uses the lock's stack and never writes it)")
    env = bisect_checks.Env(recipe=recipe, backend=args.backend, smoke_model=args.smoke_model, jobs=args.jobs,
                            model=args.model.resolve() if args.model else None)
    result = bisect.run(recipe, the_lock, check, good=args.good, bad=args.bad, max_steps=args.max_steps, env=env)
    code = 1 if result.is_range else 0  # no single commit: not the answer asked for
    if args.json:
        console.emit_json({"ok": not result.is_range, **result.model_dump(by_alias=True)})
        return code
    for line in bisect_report.text(result):
        console.out(line)
    return code
