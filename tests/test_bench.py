"""harness bench: report math and the prompt suite (fast), real runs on SmolLM2 (slow)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from harness.bench import modes, prompts, report
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


def test_tokens_per_second_acceptance_and_speedup() -> None:
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
    assert by["ngram-mod", "code"].speedup == pytest.approx(2.0)
    assert by["none", "code"].acceptance is None
    assert by["ngram-mod", "quote"].speedup == pytest.approx(40.0 / 60.0)
    # all: 160 tokens in 2 s vs 160 tokens in 2 s; acceptance over every request
    assert by["ngram-mod", report.ALL].speedup == pytest.approx(1.0)
    assert by["ngram-mod", report.ALL].acceptance == pytest.approx(41 / 60)


def test_each_prompt_counts_at_its_fastest_round() -> None:
    rows = report.summarise([
        sample("none", "code", 100, 1100.0, repeat=0),
        sample("none", "code", 100, 9000.0, repeat=1),  # a neighbour took the cores
        sample("none", "code", 100, 1000.0, repeat=2),
    ])  # fmt: skip
    assert rows[0].tokens_per_second == pytest.approx(100.0)


def test_best_depth_per_category_and_the_flags_to_use() -> None:
    plan = modes.plan(["none", "ngram-mod"], KNOWN, [2, 4])
    assert [m.label for m in plan] == ["none", "ngram-mod@2", "ngram-mod@4"]
    rows = report.summarise([
        sample("none", "code", 100, 1000.0),
        sample("ngram-mod@2", "code", 100, 800.0, drafted=20, accepted=18),
        sample("ngram-mod@4", "code", 100, 600.0, drafted=40, accepted=30),
        sample("none", "creative", 100, 1000.0),
        sample("ngram-mod@2", "creative", 100, 1100.0, drafted=4, accepted=1),
        sample("ngram-mod@4", "creative", 100, 990.0),  # nothing accepted: not a candidate
    ])  # fmt: skip
    picks = {b.category: b for b in report.best(rows, plan)}
    assert picks["code"].mode.depth == 4 and picks["code"].worth_it
    assert picks["creative"].mode.depth == 2 and not picks["creative"].worth_it
    assert report.best_depths(rows)["ngram-mod"] == {"code": 4, "creative": 2, report.ALL: 4}
    lines = report.recommendations(list(picks.values()), recipe="r.yaml", model="m.gguf")
    assert "    harness serve r.yaml --model m.gguf --spec ngram-mod --draft-n-max 4" in lines
    assert "    llama-server --spec-type ngram-mod --spec-ngram-mod-n-max 4" in lines
    assert any(line.startswith("creative: none (") for line in lines)


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
def test_bench_ngram_mod_drafts_on_quoting(tmp_path: Path, llama_bin: Path, smollm2_gguf: Path) -> None:
    out, stdout = _bench(tmp_path, llama_bin, smollm2_gguf, "--spec", "none,ngram-mod", "--json")
    data = json.loads(stdout)
    assert data == json.loads((out / "bench.json").read_text())
    rows = {(r["mode"], r["category"]): r for r in data["rows"]}
    mod, none = rows["ngram-mod", "quote"], rows["none", "quote"]
    assert mod["draft_n"] > 0 and mod["draft_n_accepted"] > 0, mod
    assert 0 < mod["acceptance"] <= 1
    assert none["tokens_per_second"] > 0 and mod["tokens_per_second"] > 0
    assert mod["speedup"] == pytest.approx(mod["tokens_per_second"] / none["tokens_per_second"], rel=1e-3)
    assert mod["tokens"] == none["tokens"] > 0  # greedy: the same text either way
    width, height = _png_size(out / "bench.png")
    assert width >= 400 and height >= 300


@pytest.mark.slow
def test_sweep_names_the_best_depth_per_category(tmp_path: Path, llama_bin: Path, smollm2_gguf: Path) -> None:
    out, stdout = _bench(
        tmp_path, llama_bin, smollm2_gguf, "--spec", "ngram-mod", "--sweep", "draft-n-max=2..3"
    )
    data = json.loads((out / "bench.json").read_text())
    assert [m["label"] for m in data["modes"]] == ["none", "ngram-mod@2", "ngram-mod@3"]
    assert data["best_depths"]["ngram-mod"]["quote"] in (2, 3)
    assert re.search(r"^  quote: .*ngram-mod@[23]", stdout, re.M), stdout
    assert "--spec-ngram-mod-n-max" in stdout or "quote: none (" in stdout
    _png_size(out / "bench.png")
