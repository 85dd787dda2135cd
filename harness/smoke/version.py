"""The ``version`` check: every target runs ``--version`` from where it will be published."""

from __future__ import annotations

from harness import runner
from harness.errors import HarnessError
from harness.smoke import Context, SmokeFailure
from harness.smoke.results import TargetVersion, VersionResult


def run(ctx: Context) -> VersionResult:
    """Per target: ok, exit code, the version line.  The stamp (``LLAMA_BUILD_COMMIT``) must show."""
    results: dict[str, TargetVersion] = {}
    for target in ctx.targets:
        try:
            res = runner.run([ctx.bin_dir / target, "--version"], check=False, timeout=60)
        except (HarnessError, OSError) as exc:  # a binary that cannot even start
            results[target] = TargetVersion(ok=False, returncode=None, version=str(exc))
            continue
        text = (res.stdout + res.stderr).strip()
        version = next((line for line in text.splitlines() if line.startswith("version:")), "")
        if version:
            ok = res.returncode == 0 and ctx.stamp in version
        else:  # tools without --version (llama-quantize) print their usage instead
            ok = res.returncode in (0, 1) and "usage" in text.lower()
        first = text.splitlines()[0] if text else ""
        results[target] = TargetVersion(ok=ok, returncode=res.returncode, version=version or first)
    failed = [t for t, r in results.items() if not r.ok]
    if failed:
        lines = "\n".join(f"  {t}: exit {results[t].returncode}: {results[t].version}" for t in failed)
        raise SmokeFailure("version", f"{', '.join(failed)} did not run or did not carry the stamp {ctx.stamp}:\n{lines}",
                           details={"targets": {t: r.model_dump() for t, r in results.items()}})
    return VersionResult(results)
