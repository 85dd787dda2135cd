"""Run the prompt suite against one real llama-server per mode and collect the server's timings.

Sampling is deterministic (temperature 0, a fixed seed, a fixed ``n_predict``,
``cache_prompt`` off), so every mode generates the same text and only the speed differs;
each server gets one unmeasured warm-up request first.  ``clients`` requests run at once
(``--parallel N``: N slots, N clients).  llama-server's response ``timings`` give tokens,
time and drafted/accepted tokens; its log's per-request line (``draft acceptance = ...,
mean len = ...``) adds the verification steps and the slot.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import requests

from harness.bench.modes import Mode
from harness.bench.prompts import Prompt
from harness.errors import StepError
from harness.serve import server


@dataclass(frozen=True)
class Settings:
    n_predict: int = 128
    repeat: int = 3
    seed: int = 42
    clients: int = 1
    request_timeout: float = 600.0


@dataclass(frozen=True)
class Sample:
    """One request's numbers, straight from the response's ``timings``."""

    mode: str  # Mode.label
    spec: str  # Mode.name
    depth: int | None
    category: str
    prompt: str
    repeat: int
    predicted_n: int
    predicted_ms: float
    draft_n: int
    draft_n_accepted: int
    output_sha: str  # first 12 hex digits of the text's sha256: speculation must not change it
    text: str = field(default="", repr=False)
    draft_steps: int | None = None  # verification steps, from the server log's line for this request
    slot: int | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.predicted_n / self.predicted_ms * 1000.0 if self.predicted_ms > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": round(self.tokens_per_second, 3)}


def sample_from(mode: Mode, prompt: Prompt, repeat: int, response: dict[str, Any]) -> Sample:
    timings = response.get("timings")
    if not isinstance(timings, dict) or "predicted_n" not in timings:
        raise StepError(f"llama-server answered without timings: {str(response)[:300]}")
    n = int(timings["predicted_n"])
    ms = float(timings.get("predicted_ms") or 0.0)
    if ms <= 0 and timings.get("predicted_per_second"):
        ms = n / float(timings["predicted_per_second"]) * 1000.0
    text = _text(response)
    return Sample(
        mode=mode.label, spec=mode.name, depth=mode.depth, category=prompt.category, prompt=prompt.name,
        repeat=repeat, predicted_n=n, predicted_ms=ms,
        draft_n=int(timings.get("draft_n", 0)),  # absent when nothing was drafted
        draft_n_accepted=int(timings.get("draft_n_accepted", 0)),
        output_sha=hashlib.sha256(text.encode()).hexdigest()[:12],
        text=text,
    )  # fmt: skip


def complete(
    srv: server.Server, prompt: str, settings: Settings, n_predict: int | None = None
) -> dict[str, Any]:
    """One chat completion (the server applies the model's template) with deterministic sampling."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "n_predict": n_predict if n_predict is not None else settings.n_predict,
        "temperature": 0.0,
        "seed": settings.seed,
        "cache_prompt": False,
        "stream": False,
    }
    try:
        r = requests.post(
            f"{srv.url}/v1/chat/completions",
            json=body,
            headers=srv.headers(),
            timeout=settings.request_timeout,
        )
    except requests.RequestException as exc:
        died = ended(srv)
        raise StepError(f"request to llama-server failed: {died + ': ' if died else ''}{exc}\n  log: {srv.log_path}") from None
    if r.status_code != 200:
        raise StepError(f"llama-server answered HTTP {r.status_code}: {r.text[:500]}\n  log: {srv.log_path}")
    data: dict[str, Any] = r.json()
    return data


def run_plan(
    binary: Path,
    model: Path,
    commands: Mapping[str, Sequence[str]],
    plan: Sequence[Mode],
    prompts: Sequence[Prompt],
    settings: Settings,
    *,
    log_dir: Path | None = None,
    on_start: Callable[[Mode, int], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> tuple[dict[str, list[str]], list[Sample]]:
    """Every mode (``commands``: its llama-server arguments), ``settings.repeat`` rounds: each
    round starts each mode's server afresh (in a rotated order) and runs every prompt once, so
    drift in machine load and what a server remembers between requests (ngram-mod's table) do
    not favour any mode, and each prompt's rounds pair with the baseline's same rounds."""
    argvs: dict[str, list[str]] = {}
    samples: list[Sample] = []
    for round_ in range(settings.repeat):
        for mode in [*plan[round_ % len(plan) :], *plan[: round_ % len(plan)]]:
            if on_start is not None:
                on_start(mode, round_)
            log_path = log_dir / f"{mode.label}.round{round_ + 1}.log" if log_dir is not None else None
            with server.running_server(binary, model, commands[mode.label], log_path=log_path) as srv:
                argvs[mode.label] = srv.argv
                complete(srv, prompts[0].text, settings, n_predict=8)  # warm-up, not measured
                mine = _run_prompts(srv, mode, prompts, round_, settings, on_sample)
            samples.extend(with_log_lines(mine, srv.log_path))
    order = {m.label: i for i, m in enumerate(plan)}
    samples.sort(key=lambda s: (order[s.mode], s.category, s.prompt, s.repeat))
    return argvs, samples


def _run_prompts(srv: server.Server, mode: Mode, prompts: Sequence[Prompt], round_: int, settings: Settings,
                 on_sample: Callable[[Sample], None] | None) -> list[Sample]:  # fmt: skip
    def one(prompt: Prompt) -> Sample:
        sample = sample_from(mode, prompt, round_, complete(srv, prompt.text, settings))
        if on_sample is not None:
            on_sample(sample)
        return sample

    if settings.clients <= 1:
        return [one(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=settings.clients) as pool:
        return list(pool.map(one, prompts))


# slot print_timing: id  0 | task 12 | draft acceptance = 0.80000 (   40 accepted /    50 generated), mean len =  3.00
_ACCEPTANCE = re.compile(
    r"id\s+(\d+) \| task -?\d+ \| draft acceptance = [\d.]+ \(\s*(\d+) accepted /\s*(\d+) generated\), "
    r"mean len =\s*([\d.]+)"
)


def log_lines(text: str) -> list[tuple[int, int, int, float]]:
    """(slot, accepted, drafted, mean acceptance length) of every request that drafted, in log order."""
    return [(int(m[1]), int(m[2]), int(m[3]), float(m[4])) for m in _ACCEPTANCE.finditer(text)]


def with_log_lines(samples: Sequence[Sample], log: Path) -> list[Sample]:
    """Each drafting sample with its slot and verification steps: the next log line whose
    accepted/drafted counts are the sample's own (the warm-up's line is skipped that way)."""
    try:
        lines = log_lines(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return list(samples)
    out = []
    for s in samples:
        i = next((i for i, (_, acc, dr, _) in enumerate(lines) if s.draft_n and (acc, dr) == (s.draft_n_accepted, s.draft_n)), None)
        if i is None:
            out.append(s)
            continue
        slot, accepted, _, mean_len = lines.pop(i)
        steps = round(accepted / (mean_len - 1.0)) if mean_len > 1.0 and accepted else None
        out.append(replace(s, slot=slot, draft_steps=steps))
    return out


def ended(srv: server.Server, wait: float = 2.0) -> str:
    """How the server ended when a request to it failed ("llama-server was killed by SIGABRT"), "" while it
    runs; read without reaping it (``runner.Service.stop`` still owns its process group)."""
    if srv.process is None or not hasattr(os, "waitid"):
        return ""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = os.waitid(os.P_PID, srv.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return ""
        if info is not None:
            if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                return f"llama-server was killed by {signal.Signals(info.si_status).name}"
            return f"llama-server exited {info.si_status}"
        if time.monotonic() > deadline:
            return ""
        time.sleep(0.05)


def _text(response: dict[str, Any]) -> str:
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return str(message.get("content") or "") + str(message.get("reasoning_content") or "")
