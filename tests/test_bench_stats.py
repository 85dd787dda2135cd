"""The bench's statistics on recorded samples (tests/data/bench/*.json: the samples of real
`harness bench` runs, as bench.json holds them), and the rules behind a verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench import report, stats
from harness.bench.runner import Sample

DATA = Path(__file__).parent / "data" / "bench"


def recorded(name: str) -> tuple[dict[str, object], list[Sample]]:
    data = json.loads((DATA / name).read_text())
    fields = set(Sample.__dataclass_fields__)
    samples = [Sample(**{k: v for k, v in s.items() if k in fields}) for s in data["samples"]]
    return data, samples


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_recorded_runs_get_the_verdicts_written_beside_them(name: str) -> None:
    data, samples = recorded(name)
    rows = {(r.mode, r.category): r for r in report.summarise(samples)}
    for key, verdict in data["expect"].items():  # type: ignore[union-attr]
        mode, category = key.split("/")
        assert rows[mode, category].verdict == verdict, (key, rows[mode, category])
    assert report.summarise(samples) == report.summarise(samples)  # seeded: the same interval every time


def test_a_noisy_sample_set_gives_no_clear_difference() -> None:
    """Three prompts, three rounds, a neighbour stealing the cores at random: medians differ, the
    interval straddles 1.0."""
    noisy = {"a": [1.40, 0.70, 1.05], "b": [0.80, 1.30, 0.95], "c": [1.20, 0.75, 1.10]}
    c = stats.compare(noisy)
    assert c.verdict == stats.UNCLEAR and c.low is not None and c.high is not None and c.low < 1.0 < c.high


def test_a_clear_sample_set_gives_a_verdict_and_its_mirror_the_opposite() -> None:
    clear = {"a": [1.31, 1.27, 1.35], "b": [1.12, 1.18, 1.15], "c": [1.22, 1.20, 1.25]}
    c = stats.compare(clear)
    assert c.verdict == stats.FASTER and c.low is not None and c.low > 1.0
    assert c.ratio == pytest.approx(1.22)
    mirror = stats.compare({k: [1 / v for v in vs] for k, vs in clear.items()})
    assert mirror.verdict == stats.SLOWER


def test_one_prompt_carrying_the_difference_is_not_a_verdict() -> None:
    """Resampling prompts: two prompts at 1.0 and one at 2.0 is a difference one prompt makes."""
    c = stats.compare({"a": [2.0, 2.1, 1.9], "b": [1.0, 0.98, 1.02], "c": [1.01, 0.99, 1.0]})
    assert c.verdict == stats.UNCLEAR


def test_too_few_pairs_is_never_a_verdict() -> None:
    c = stats.compare({"a": [3.0], "b": [3.1], "c": [2.9], "d": [3.0], "e": [3.05]})
    assert c.pairs == 5 and c.verdict == stats.UNCLEAR and "a verdict needs 6" in (c.reason or "")


def test_the_baseline_spread() -> None:
    assert stats.spread({"a": [10.0], "b": [5.0]}) is None  # one round: not measured
    quiet = stats.spread({"a": [100.0, 101.0, 99.0], "b": [50.0, 50.5, 49.5]})
    assert quiet is not None and quiet == pytest.approx(0.01) and not stats.noisy(quiet)
    assert stats.noisy(stats.spread({"a": [100.0, 60.0, 120.0]}))


def test_the_demo_run_that_credited_noise_to_speculation_is_caught() -> None:
    """Recorded: in run 1, ngram-mod's requests that drafted nothing (every code prompt, two of three
    quoting prompts) ran 1.14-2.37x as fast as none's in all 18 pairs: the load shifted between the
    two servers. Counted as measured, quote came out "faster" (1.40x [1.28, 2.36]); a request that
    drafted nothing counts as 1.0, and the A/A check names the shift."""
    _, samples = recorded("demo-run1.json")
    drift = report.idle_drift(samples)
    assert drift is not None and drift > 1.3
    rows = report.summarise(samples)
    assert any("requests that drafted nothing" in line for line in report.noise_lines(rows, 3, drift))
