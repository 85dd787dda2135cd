"""The checks ``harness bisect`` asks at each step: a stacked candidate -> good, bad or skip.

- ``apply``: the stack applies (bad names the first item that stops applying);
- ``run:COMMAND``: a user command in the stacked tree, with ``git bisect run``'s exit codes
  (0 good, 125 skip, 1-127 bad; 128 and above, or a signal, stops the bisection; 126/127 at the
  good end stop it too, as git's "bogus exit code": the check itself cannot run);
- ``build``: the recipe's backend builds (configure + ninja in the bisection's own build
  directory, kept between steps and under ccache, so a step is an incremental build);
- ``smoke``: it builds and passes the recipe's smoke checks (a build that fails is skipped);
- ``bench:METRIC<VALUE`` / ``>VALUE``: it builds and its llama-server's figure lies beyond the
  threshold by the bench's statistics (harness/bisect/bench.py; a build that fails, a llama-server
  that crashes or does not answer, or a figure whose interval straddles the threshold, is skipped);
- ``gates`` (nightly only): it builds and passes the recipe's ``nightly.gates`` against the last
  good night's figures (harness/nightly/gates.py), as the failed night's gate step asked.

Where the stack does not apply, every check but ``apply`` skips the commit: it cannot be
judged.  Nothing is published: binaries for the smoke checks go to a temp dir that is removed.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import atomic, backends, console, lifetime, paths, runner, smoke
from harness.bisect import bench as bisect_bench
from harness.build import cmake, isa, publish, toolchain
from harness.build import stamp as stamp_mod
from harness.build.run import stamp_of
from harness.errors import CommandFailed, InputError, StepError
from harness.recipe.load import Recipe
from harness.serve.rpc import build as rpc_build
from harness.source import git
from harness.source.conflicts import ConflictError
from harness.source.stack import Prepared

NAMES = ("apply", "run:COMMAND", "build", "smoke", "bench:METRIC<VALUE")


@dataclass(frozen=True)
class Verdict:
    verdict: Literal["good", "bad", "skip"]
    detail: str = ""
    code: int | None = None  # run: the command's exit status


@dataclass(frozen=True)
class Env:
    """What the checks need besides the stacked tree."""

    recipe: Recipe | None = None
    backend: str | None = None  # build/smoke: default the recipe's first backend
    smoke: tuple[str, ...] | None = None  # smoke: default the recipe's build.smoke
    smoke_model: Path | None = None
    model: Path | None = None  # bench: the GGUF the llama-server serves
    gate_baseline: dict[str, Any] | None = None  # gates: the last good night's figures (last-good.json)
    jobs: int | None = None
    root: Path | None = None  # the bisection's tree root (its build directories live there)


@dataclass(frozen=True)
class Check:
    text: str  # as given: apply, build, smoke, run:COMMAND, bench:METRIC<VALUE
    kind: str
    argv: list[str] = field(default_factory=list)
    threshold: bisect_bench.Threshold | None = None  # bench

    def judge(self, stacked: Prepared | ConflictError, env: Env) -> Verdict:
        if isinstance(stacked, ConflictError):
            what = f"{stacked.report.item}: conflicts in {', '.join(f.path for f in stacked.report.files)}"
            if self.kind == "apply":
                return Verdict("bad", f"{what} (item {stacked.report.index + 1})")
            return Verdict("skip", f"the stack does not apply: {what}")
        if self.kind == "apply":
            return Verdict("good")
        if self.kind == "run":
            return _run(self.argv, stacked, env)
        try:
            built = _build(stacked, env)
        except CommandFailed as exc:
            if self.kind == "build":
                return Verdict("bad", f"the build failed: {_last_error(exc)}")
            return Verdict("skip", f"the build failed, so the {self.kind} check cannot run: {_last_error(exc)}")
        if self.kind == "build":
            return Verdict("good")
        if self.kind == "bench":
            assert self.threshold is not None
            return _bench(stacked, env, built, self.threshold)
        if self.kind == "gates":
            return _gates(stacked, env, built)
        return _smoke(stacked, env, built)


def parse(text: str) -> Check:
    """``--check`` as given -> a Check; InputError (exit 2) for one we do not know."""
    if text in ("apply", "build", "smoke"):
        return Check(text, text)
    if text.startswith("run:"):
        try:
            argv = shlex.split(text[4:])
        except ValueError as exc:
            raise InputError(f"--check {text!r}: {exc}", key="--check") from None
        if not argv:
            raise InputError("--check run: needs a command, e.g. run:./check.sh or 'run:make test'", key="--check")
        return Check(text, "run", [_program(argv[0]), *argv[1:]])
    if text.startswith("bench:"):
        return Check(text, "bench", threshold=bisect_bench.parse(text[6:]))
    import difflib

    close = difflib.get_close_matches(text.split(":")[0], ["apply", "build", "smoke", "run", "bench"], n=1)
    raise InputError(f"--check {text!r}: not a check (one of {', '.join(NAMES)})", key="--check",
                     hint=f"did you mean {close[0]!r}?" if close else None)


def _program(name: str) -> str:
    """A run: check's program, checked before the first step (InputError, exit 2): a path (one with a
    ``/``) is taken from the current directory, as a shell would, and made absolute, since the
    command runs in the stacked tree; a bare name is looked up on PATH."""
    if "/" not in name:
        if shutil.which(name) is None:
            raise InputError(f"--check run:{name}: {name} not found on PATH", key="--check",
                             hint=f"give its path (run:./{name} for one in the current directory)")
        return name
    path = Path(name).resolve()
    if not path.exists():
        raise InputError(f"--check run:{name}: {name}: no such file (a relative path is taken from the current "
                         f"directory, {Path.cwd()})", key="--check")
    if path.is_dir():
        raise InputError(f"--check run:{name}: {name} is a directory", key="--check")
    if not os.access(path, os.X_OK):
        raise InputError(f"--check run:{name}: {name} is not executable (chmod +x it, or "
                         f"run:'sh {shlex.quote(str(path))}')", key="--check")
    return str(path)


def _run(argv: list[str], prepared: Prepared, env: Env) -> Verdict:
    """``git bisect run``'s convention, the command run in the stacked tree."""
    assert env.root is not None
    log = env.root / "bisect-run.log"
    try:
        code = runner.stream(argv, log_path=log, cwd=prepared.tree, check=False,
                             env={**os.environ, "HARNESS_BISECT_UPSTREAM": prepared.base,
                                  "HARNESS_BISECT_TREE": str(prepared.tree)})
    except OSError as exc:  # the script was removed or made unexecutable since the check began
        raise StepError(f"bisect stopped: cannot run {argv[0]} at upstream {prepared.base[:12]}: {exc.strerror}") from None
    tail = "; ".join(line for line in log.read_text(errors="replace").splitlines()[-3:] if not line.startswith("+ "))
    said = f": {tail}" if tail else ""
    name = Path(argv[0]).name if "/" in argv[0] else argv[0]
    if code == 0:
        return Verdict("good", tail, code)
    if code == 125:
        return Verdict("skip", f"{name} exited 125 (cannot be judged){said}", code)
    if 0 < code < 128:
        why = {126: " (a command it runs is not executable?)", 127: " (a command it runs was not found?)"}.get(code, "")
        return Verdict("bad", f"{name} exited {code}{why}{said}", code)
    how = f"was killed by signal {-code}" if code < 0 else f"exited {code}"
    raise StepError(f"bisect stopped: the check itself failed: {shlex.join(argv)} {how} at upstream "
                    f"{prepared.base[:12]}{said}\n(git bisect run's convention: 0 good, 125 skip, 1-127 bad; "
                    "128 and above, or a signal, stops the bisection)", hint=f"its output is in {log}")


@dataclass(frozen=True)
class _Built:
    bdir: Path
    targets: list[str]
    stamp: cmake.Stamp
    backend: str


def _build(prepared: Prepared, env: Env) -> _Built:
    """Configure (when its command changed) and ninja in ``<bisect root>/build-<backend>``, beside the
    bisection's ``src`` as a recipe build directory sits beside its ``src``: ccache sees the same
    relative paths and hits what the recipe's own builds compiled."""
    assert env.recipe is not None and env.root is not None
    recipe = env.recipe
    name = env.backend or recipe.spec.build.backends[0]
    backend = backends.get(name)
    bdir = env.root / f"build-{name}"
    cmake.check_paths(bdir)
    launcher = cmake.ccache_program()
    cmake_bin, ninja_bin = cmake.program("cmake"), cmake.program("ninja")
    plan = isa.plan(recipe.spec.build, toolchain.compiler())
    stamp = stamp_of(prepared)  # the stamp `harness build` gives the same tree
    configured = stamp_mod.for_cmake(stamp, prepared.tree)
    targets = rpc_build.targets(recipe.spec.build, prepared.tree)
    entries = cmake.cache_entries(recipe.spec.build, backend, configured, prepared.tree, bdir, ccache=launcher, isa=plan)
    configure = cmake.configure_command(prepared.tree, bdir, entries, ninja_bin, cmake_bin)
    build_env = cmake.build_env(backend, git.commit_time(prepared.tree, prepared.base), paths.cache_root(),
                                ccache=launcher)
    log = bdir / "harness-build.log"
    with atomic.lock(bdir.with_name(bdir.name + ".lock"), timeout=7200):
        lifetime.wait_for_writers(bdir, what=f"bisect {recipe.name}/{name}")  # a killed step's compiles
        bdir.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        state = bdir / "harness-configure.json"
        if not (bdir / "CMakeCache.txt").exists() or not state.exists() or state.read_text() != shlex.join(configure):
            console.step(f"bisect: configuring {name} at {prepared.base[:12]}")
            state.unlink(missing_ok=True)
            runner.stream(configure, log_path=log, env=build_env, append=True)
            atomic.write_text(state, shlex.join(configure))
        console.step(f"bisect: building {', '.join(targets)} at {prepared.base[:12]}")
        stamp_mod.ninja(cmake.build_command(bdir, targets, ninja_bin, env.jobs), log, build_env, bdir, stamp, configured)
    return _Built(bdir, targets, stamp, name)


def _smoke(prepared: Prepared, env: Env, built: _Built) -> Verdict:
    """The smoke checks on the binaries collected as a publish would, in a temp dir removed afterwards."""
    assert env.recipe is not None and env.root is not None
    checks = rpc_build.smoke_checks(env.recipe.spec.build, list(env.smoke or env.recipe.spec.build.smoke))
    with atomic.temp_dir_beside(env.root / f"smoke-{built.backend}") as tmp:
        publish.collect(built.bdir, prepared.tree, built.targets, tmp)
        ctx = smoke.Context(bin_dir=tmp / "bin", backend=built.backend, targets=built.targets,
                            stamp=built.stamp.commit, work=tmp / "work", model=env.smoke_model)
        try:
            smoke.run(checks, ctx)
        except smoke.SmokeFailure as exc:
            return Verdict("bad", str(exc).splitlines()[0])
    return Verdict("good", f"smoke checks passed: {', '.join(checks)}")


def _bench(prepared: Prepared, env: Env, built: _Built, threshold: bisect_bench.Threshold) -> Verdict:
    """The built llama-server measured (binaries collected as a publish would, in a temp dir removed afterwards)."""
    assert env.recipe is not None and env.root is not None and env.model is not None
    with atomic.temp_dir_beside(env.root / f"bench-{built.backend}") as tmp:
        publish.collect(built.bdir, prepared.tree, built.targets, tmp)
        binary = tmp / "bin" / "llama-server"
        if not binary.is_file():
            raise StepError(f"bench: the build of {env.recipe.name} has no llama-server",
                            hint="add llama-server to build.targets")
        try:
            values = bisect_bench.measure(binary, env.recipe, built.backend, env.model, tmp)
        except StepError as exc:  # it crashed, did not start, or did not answer: nothing to measure
            return Verdict("skip", f"llama-server could not be measured: {_said(exc, tmp / 'logs')}")
    verdict, detail = bisect_bench.decide(values, threshold)
    return Verdict(verdict, detail)


def _said(exc: StepError, logs: Path) -> str:
    """The error's first line, and the last line the server logged (a GGML_ASSERT, say), before the logs go."""
    said = str(exc).splitlines()[0]
    last = [line.strip() for log in sorted(logs.glob("*.log")) for line in log.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith("+ ")][-1:]
    return f"{said} (its log's last line: {last[0][:200]})" if last else said


def _gates(prepared: Prepared, env: Env, built: _Built) -> Verdict:
    """The recipe's nightly gates measured with the built tools, held against the last good night's figures."""
    from harness.nightly import gates

    assert env.recipe is not None and env.root is not None and env.recipe.spec.nightly.gates is not None
    with atomic.temp_dir_beside(env.root / f"gates-{built.backend}") as tmp:
        publish.collect(built.bdir, prepared.tree, built.targets, tmp)
        metrics = gates.measure(env.recipe, env.recipe.spec.nightly.gates, tmp / "bin", tmp / "work")
    return gate_verdict(metrics, env.gate_baseline, env.recipe)


def gate_verdict(metrics: dict[str, float], baseline: dict[str, Any] | None, recipe: Recipe) -> Verdict:
    from harness.nightly import gates

    assert recipe.spec.nightly.gates is not None
    refused = gates.compare(metrics, baseline, recipe.spec.nightly.gates)
    if refused:
        return Verdict("bad", "; ".join(str(r) for r in refused))
    return Verdict("good", ", ".join(f"{k} {v:.6f}" for k, v in sorted(metrics.items()) if k.endswith("mean_kld")))


def _last_error(exc: CommandFailed) -> str:
    """The compiler's first error line of a failed build (else the last line git/ninja said)."""
    lines = exc.output_tail.splitlines()
    errors = [line.strip() for line in lines if "error" in line.lower() and "FAILED" not in line]
    return (errors or [line.strip() for line in lines if line.strip()] or ["(no output)"])[0][:300]

