"""harness bench: report math and the prompt suite (fast), real runs on SmolLM2 (slow)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import yaml

from harness.bench import modes, prompts, report, stats
from harness.bench.runner import Sample
from harness.errors import InputError
from tests.conftest import REPO, run_harness
from tests.test_serve import KNOWN, env_without_key, served_recipe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample(
    mode: str, category: str, n: int, ms: float, drafted: int = 0, accepted: int = 0, **kw: object
) -> Sample:
    spec, _, depth = mode.partition("@")
    fields: dict[str, object] = {
        "mode": mode, "spec": spec, "depth": int(depth) if depth else None, "category": category,
        "prompt": "p", "repeat": 0, "predicted_n": n, "predicted_ms": ms,
        "draft_n": drafted, "draft_n_accepted": accepted, "output_sha": "same", **kw,
    }  # fmt: skip
    return Sample(**fields)  # type: ignore[arg-type]


# --- fast -----------------------------------------------------------------------------------


def rounds(mode: str, category: str, speeds: list[list[float]], drafted: int = 0, accepted: int = 0) -> list[Sample]:
    """Samples of 100 tokens: ``speeds[prompt][round]`` tokens/s."""
    return [
        sample(mode, category, 100, 100_000.0 / tps, drafted, accepted, prompt=f"p{p}", repeat=r)
        for p, row in enumerate(speeds) for r, tps in enumerate(row)
    ]  # fmt: skip


def test_tokens_per_second_acceptance_and_a_paired_speedup() -> None:
    rows = report.summarise([
        sample("none", "code", 100, 1000.0),
        sample("ngram-mod", "code", 100, 500.0, drafted=50, accepted=40),
        sample("none", "quote", 60, 1000.0),
        sample("ngram-mod", "quote", 60, 1500.0, drafted=10, accepted=1),
    ])  # fmt: skip
    by = {(r.mode, r.category): r for r in rows}
    assert by["none", "code"].tokens_per_second == pytest.approx(100.0)
    assert by["ngram-mod", "code"].tokens_per_second == pytest.approx(200.0)
    assert by["ngram-mod", "code"].acceptance == pytest.approx(0.8)
    assert by["ngram-mod", "code"].passes_per_token == pytest.approx(0.6)  # 60 target passes for 100 tokens
    assert by["ngram-mod", "code"].speedup == pytest.approx(2.0)
    assert by["ngram-mod", "code"].verdict == stats.UNCLEAR  # one pair decides nothing
    assert "1 pairs" in (by["ngram-mod", "code"].reason or "")
    assert by["none", "code"].acceptance is None and by["none", "code"].verdict is None
    assert by["ngram-mod", "quote"].speedup == pytest.approx(40.0 / 60.0)
    assert by["ngram-mod", report.ALL].speedup == pytest.approx((2.0 + 40 / 60) / 2)  # median of two pairs
    assert by["ngram-mod", report.ALL].acceptance == pytest.approx(41 / 60)


def test_a_mode_that_drafted_nothing_gets_no_speedup() -> None:
    """make demo (issue 24): ngram-mod drafted 0 tokens on code and was printed as 8.29x faster."""
    rows = report.summarise([
        *rounds("none", "code", [[10.0, 10.5, 9.8], [11.0, 10.0, 10.2], [9.0, 9.5, 9.9]]),
        *rounds("ngram-mod", "code", [[80.0, 85.0, 90.0], [80.0, 88.0, 91.0], [79.0, 86.0, 82.0]]),
    ])  # fmt: skip
    row = next(r for r in rows if r.mode == "ngram-mod")
    assert row.speedup is None and row.low is None and row.verdict == stats.UNCLEAR
    assert row.reason == report.NOTHING_DRAFTED
    assert report.best(rows, modes.plan(["ngram-mod"], KNOWN))[0].mode is None
    assert "drafted nothing" in "".join(str(c) for c in report.table(rows).columns[8].cells)


def test_each_prompt_counts_at_its_median_round() -> None:
    rows = report.summarise([
        sample("none", "code", 100, 1100.0, repeat=0),
        sample("none", "code", 100, 9000.0, repeat=1),  # a neighbour took the cores
        sample("none", "code", 100, 1000.0, repeat=2),
    ])  # fmt: skip
    assert rows[0].tokens_per_second == pytest.approx(100 / 1.1)
    assert rows[0].spread is not None and rows[0].spread > stats.NOISY_CV
    assert report.noise_lines(rows, 3)[0].startswith("the machine is too noisy to decide")
    assert "-t N" in report.noise_lines(rows, 3)[0]


def test_best_depth_per_category_and_the_flags_to_use() -> None:
    plan = modes.plan(["none", "ngram-mod"], KNOWN, [2, 4])
    assert [m.label for m in plan] == ["none", "ngram-mod@2", "ngram-mod@4"]
    base = [[100.0, 101.0, 99.0], [50.0, 52.0, 49.0], [80.0, 79.0, 81.0]]
    rows = report.summarise([
        *rounds("none", "code", base),
        *rounds("ngram-mod@2", "code", [[v * 1.2 for v in p] for p in base], drafted=20, accepted=18),
        *rounds("ngram-mod@4", "code", [[v * 1.5 for v in p] for p in base], drafted=40, accepted=30),
        *rounds("none", "creative", base),
        *rounds("ngram-mod@2", "creative", [[v * f for v, f in zip(p, (1.1, 0.9, 1.02), strict=True)] for p in base],
                drafted=4, accepted=1),
        *rounds("ngram-mod@4", "creative", base),  # drafted nothing: never a candidate
    ])  # fmt: skip
    picks = {b.category: b for b in report.best(rows, plan)}
    assert picks["code"].mode is not None and picks["code"].mode.depth == 4 and picks["code"].worth_it
    assert picks["code"].row is not None and picks["code"].row.verdict == stats.FASTER
    assert picks["creative"].mode is None and picks["creative"].row is not None
    assert picks["creative"].row.mode == "ngram-mod@2" and picks["creative"].row.verdict == stats.UNCLEAR
    depths = report.best_depths(rows)["ngram-mod"]
    assert (depths["code"], depths["creative"]) == (4, None)
    lines = report.recommendations(list(picks.values()), recipe="r.yaml", model="m.gguf")
    assert "    harness serve r.yaml --model m.gguf --spec ngram-mod --draft-n-max 4" in lines
    assert "    llama-server --spec-type ngram-mod --spec-ngram-mod-n-max 4" in lines
    assert any(line.startswith("creative: none (no mode was clearly faster") for line in lines)


def test_sweep_syntax() -> None:
    assert modes.parse_sweep("draft-n-max=1..3,5") == [1, 2, 3, 5]
    with pytest.raises(InputError, match="did you mean 'draft-n-max'"):
        modes.parse_sweep("draft-max=1..3")
    with pytest.raises(InputError):
        modes.parse_sweep("draft-n-max=3..1")


def test_modes_without_a_depth_run_once_and_none_is_always_the_baseline() -> None:
    plan = modes.plan(["mtp", "ngram-cache"], KNOWN, [1, 2])
    assert [m.label for m in plan] == ["none", "mtp@1", "mtp@2", "ngram-cache"]
    assert plan[1].flags() == ["--spec-type", "draft-mtp", "--spec-draft-n-max", "1"]
    assert plan[1].serve_flags() == ["--mtp", "--draft-n-max", "1"]


def test_builtin_suite_has_every_category_and_user_prompts_join_it(tmp_path: Path) -> None:
    suite = prompts.load_suite()
    counts = {c: sum(p.category == c for p in suite) for c in ("code", "json", "quote", "creative")}
    assert all(n >= 3 for n in counts.values()), counts
    (tmp_path / "quote").mkdir()
    (tmp_path / "quote" / "article.txt").write_text("Quote this.\n")
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "join.txt").write_text("Write a join.")
    mine = prompts.load_suite(tmp_path, categories=["quote", "sql"])
    assert [(p.category, p.name) for p in mine] == [
        ("quote", "article"), ("quote", "email"), ("quote", "meeting"), ("sql", "join"),
    ]  # fmt: skip
    assert mine[0].text == "Quote this."
    assert [p.name for p in prompts.load_suite(tmp_path, builtin=False, categories=["sql"])] == ["join"]
    with pytest.raises(InputError, match="did you mean 'quote'"):
        prompts.load_suite(categories=["qoute"])


# --- slow: real llama-server -----------------------------------------------------------------


def _quote_only(tmp_path: Path) -> Path:
    """The built-in quoting prompt that SmolLM2-135M does quote (long opening sentence)."""
    d = tmp_path / "prompts" / "quote"
    d.mkdir(parents=True)
    (d / "article.txt").write_text((REPO / "harness/data/prompts/quote/article.txt").read_text())
    return d.parent


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _bench(tmp_path: Path, llama_bin: Path, gguf: Path, *args: str) -> tuple[Path, str]:
    recipe, builds = served_recipe(tmp_path, llama_bin)
    out = tmp_path / "out"
    result = run_harness(
        "bench", recipe, "--model", gguf, "--builds-dir", builds, "--prompts", _quote_only(tmp_path),
        "--no-builtin", "--n-predict", "80", "--out", out, *args, "--", "-t", "2",
        env=env_without_key(), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.mark.slow
def test_bench_measures_the_served_command_line_and_writes_a_profile_serve_applies(
    tmp_path: Path, llama_bin: Path, smollm2_gguf: Path
) -> None:
    out, stdout = _bench(tmp_path, llama_bin, smollm2_gguf, "--spec", "none,ngram-mod", "--repeat", "2", "--json")
    data = json.loads(stdout)
    assert data.pop("ok") is True  # every --json result says ok; the file holds the report alone
    assert data == json.loads((out / "bench.json").read_text())
    rows = {(r["mode"], r["category"]): r for r in data["rows"]}
    mod, none = rows["ngram-mod", "quote"], rows["none", "quote"]
    assert mod["draft_n"] > 0 and mod["draft_n_accepted"] > 0, mod
    assert 0 < mod["acceptance"] <= 1 and 0 < mod["passes_per_token"] < 1
    assert mod["accepted_per_step"] > 0 and mod["draft_steps"] > 0  # from llama-server's log lines
    assert mod["low"] <= mod["speedup"] <= mod["high"] and mod["pairs"] == 2
    assert mod["verdict"] == stats.UNCLEAR and "2 pairs" in mod["reason"]  # one prompt, two rounds: too few
    assert none["tokens_per_second"] > 0 and none["verdict"] is None
    assert mod["tokens"] == none["tokens"] > 0  # greedy: the same text either way
    assert data["statistics"]["baseline_spread"] is not None
    width, height = _png_size(out / "bench.png")
    assert width >= 400 and height >= 300
    # each mode ran the command line `harness serve --dry-run` prints for the same options
    recipe, builds = tmp_path / "repo" / "mini.yaml", tmp_path / "builds"
    for mode, spec in (("none", "none"), ("ngram-mod", "ngram-mod")):
        res = run_harness("serve", recipe, "--model", smollm2_gguf, "--builds-dir", builds, "--spec", spec,
                          "--dry-run", "--json", "--", "-t", "2", env=env_without_key())  # fmt: skip
        assert res.returncode == 0, res.stderr
        served = json.loads(res.stdout)["argv"]
        ran = next(m["argv"] for m in data["modes"] if m["label"] == mode)
        assert ran[: ran.index("--host")] == served[: served.index("--host")]
    # the profile: what serve --profile runs, and only for this model and build
    profile = json.loads((out / "profile.json").read_text())
    assert profile["version"] == 1 and profile["categories"]["quote"]["mode"] == "none"  # no verdict: none
    assert profile["categories"]["quote"]["closest"] == "ngram-mod"
    res = run_harness("serve", recipe, "--model", smollm2_gguf, "--builds-dir", builds, "--profile",
                      out / "profile.json", "--dry-run", "--json", env=env_without_key())  # fmt: skip
    assert res.returncode == 0, res.stderr
    argv = json.loads(res.stdout)["argv"]
    assert argv[3 : argv.index("--host")] == profile["categories"]["quote"]["args"]
    other = tmp_path / "other.gguf"
    other.write_bytes(smollm2_gguf.read_bytes()[:-1] + b"\0")
    res = run_harness("serve", recipe, "--model", other, "--builds-dir", builds, "--profile", out / "profile.json",
                      "--dry-run", env=env_without_key())  # fmt: skip
    assert res.returncode == 2 and "was made for model" in res.stderr, res.stderr
    swap = yaml.safe_load((out / "llama-swap.yaml").read_text())
    assert swap["models"]["quote"]["cmd"].endswith("--port ${PORT}")


@pytest.mark.slow
def test_sweep_names_the_best_depth_per_category(tmp_path: Path, llama_bin: Path, smollm2_gguf: Path) -> None:
    out, stdout = _bench(
        tmp_path, llama_bin, smollm2_gguf, "--spec", "ngram-mod", "--sweep", "draft-n-max=2..3"
    )
    data = json.loads((out / "bench.json").read_text())
    assert [m["label"] for m in data["modes"]] == ["none", "ngram-mod@2", "ngram-mod@3"]
    assert data["best_depths"]["ngram-mod"]["quote"] in (2, 3, None)
    assert re.search(r"^  quote: (ngram-mod@[23] \(|none \(no mode was clearly faster; closest ngram-mod@[23])", stdout,
                     re.M), stdout  # fmt: skip
    assert all(r["verdict"] in stats.VERDICTS for r in data["rows"] if r["spec"] != "none")
    _png_size(out / "bench.png")
