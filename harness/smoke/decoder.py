"""Decoding a few tokens with a build's own binaries, and telling a crash from a failure.

llama-server is used when the build has it (the binary users run), else llama-completion.
A process killed by a signal (SIGILL, SIGSEGV, SIGBUS...) raises :class:`Crashed`, whatever
the moment: while loading and warming up (llama-server decodes once before /health answers)
or at the request.  The server's log is kept: its ``system_info`` line is ggml's own list of
the instruction sets the CPU backend was compiled with.

The proof of decoding is what the decoder counted, never the text: llama-server's
``timings.predicted_n``, the ids of the generated tokens (``return_tokens``) and each one's
log-probability (``n_probs``: NaN logits come back as ``null``); llama-completion's
``llama_perf`` lines.  :func:`problem` says why an answer is no proof (no tokens, fewer
than asked, counts that disagree, probabilities that are not finite numbers).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from harness import runner
from harness.errors import CommandFailed, StepError

DECODERS = ("llama-server", "llama-completion")
PROMPT = "Hello world, the llama model is"


@dataclass(frozen=True)
class Decoded:
    tokens: int  # generated tokens as the decoder counted them (llama-server: timings.predicted_n)
    content: str
    seconds: float
    tokens_per_s: float | None  # generation, llama-server's own timing (predicted_per_second)
    log: str
    prompt_per_s: float | None = None  # prompt processing (prompt_per_second)
    token_ids: tuple[int, ...] | None = None  # the generated tokens (llama-server); None: not reported
    # each generated token's log-probability (None where the server wrote null: NaN); None: not reported
    logprobs: tuple[float | None, ...] | None = None
    prob_ids: tuple[int, ...] | None = None  # the token id each log-probability is for


def problem(got: Decoded, n_predict: int) -> str | None:
    """Why ``got`` does not prove that ``n_predict`` tokens were evaluated; None when it does."""
    if got.tokens <= 0:
        return f"no tokens were generated (asked for {n_predict})"
    if got.tokens != n_predict:
        return f"{got.tokens} tokens were generated, asked for {n_predict}"
    if got.token_ids is not None and len(got.token_ids) != got.tokens:
        return f"the server returned {len(got.token_ids)} token ids for {got.tokens} generated tokens"
    if got.logprobs is None:
        return None
    if len(got.logprobs) != got.tokens:
        return f"the server returned {len(got.logprobs)} token probabilities for {got.tokens} generated tokens"
    bad = [i for i, p in enumerate(got.logprobs) if p is None or not math.isfinite(p)]
    if bad:
        return (f"the probabilities of generated tokens {bad} are not finite numbers "
                f"({[got.logprobs[i] for i in bad]}): the logits are NaN or infinite")
    if got.token_ids is not None and got.prob_ids is not None and got.prob_ids != got.token_ids:
        return f"the token ids {list(got.token_ids)} and those of their probabilities {list(got.prob_ids)} differ"
    return None


class Crashed(StepError):
    """The decoder was killed by a signal (``returncode`` is minus the signal number)."""

    def __init__(self, binary: str, returncode: int, tail: str, log: str | None) -> None:
        self.binary = binary
        self.returncode = returncode
        self.tail = tail
        self.log = log
        super().__init__(f"{binary} was killed by {signal_name(returncode)}")

    @property
    def signal(self) -> str:
        return signal_name(self.returncode)


def signal_name(returncode: int) -> str:
    """``-4`` -> ``SIGILL (illegal instruction)``."""
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"signal {-returncode}"
    return f"{sig.name} ({(signal.strsignal(sig) or sig.name).lower()})"


def binary(bin_dir: Path) -> Path | None:
    """The build's decoder: llama-server, else llama-completion; None when it has neither."""
    return next((bin_dir / name for name in DECODERS if (bin_dir / name).is_file()), None)


@functools.cache
def trace_flags(decoder: Path) -> tuple[str, ...]:
    """``-lv 4`` where the binary has it: llama.cpp prints ``system_info`` at trace level
    (common/common.cpp: ``COM_TRC``) since late 2026; older builds print it at info level."""
    try:
        res = runner.run([decoder, "--help"], check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return ()
    return ("-lv", "4") if "--log-verbosity" in res.stdout + res.stderr else ()


def decode(decoder: Path, model: Path, args: Sequence[str], *, n_predict: int, log_path: Path,
           prompt: str = PROMPT, timeout: float = 180) -> Decoded:
    """Decode ``n_predict`` tokens of ``prompt`` at temperature 0 (EOS ignored).  Raises Crashed/StepError."""
    if decoder.name == "llama-server":
        return _with_server(decoder, model, args, n_predict, log_path, prompt, timeout)
    return _with_completion(decoder, model, args, n_predict, log_path, prompt, timeout)


def _with_server(decoder: Path, model: Path, args: Sequence[str], n_predict: int, log_path: Path,
                 prompt: str, timeout: float) -> Decoded:
    from harness.serve.server import running_server

    t0 = time.monotonic()
    log_path.unlink(missing_ok=True)
    try:
        with running_server(decoder, model, ["-c", "512", "-np", "1", *args], log_path=log_path,
                            ready_timeout=timeout) as srv:
            try:  # Connection: close: a kept-alive connection held the server's exit up by 0.1 s
                resp = requests.post(f"{srv.url}/completion", headers={"Connection": "close"}, timeout=timeout, json={
                    "prompt": prompt, "n_predict": n_predict, "temperature": 0, "seed": 1,
                    "ignore_eos": True, "cache_prompt": False, "return_tokens": True, "n_probs": 1})
            except requests.RequestException as exc:
                code = _exit_code(srv.process)
                if code is not None and code < 0:
                    raise Crashed(decoder.name, code, _tail(log_path), str(log_path)) from None
                raise StepError(f"{decoder.name} did not answer: {exc}") from None
            if resp.status_code != 200:
                raise StepError(f"{decoder.name} answered HTTP {resp.status_code}: {resp.text[:300]}")
            body: dict[str, Any] = resp.json()
    except CommandFailed as exc:  # it died before /health answered
        if exc.returncode < 0:
            raise Crashed(decoder.name, exc.returncode, exc.output_tail, exc.log) from None
        raise
    return _from_server(body, round(time.monotonic() - t0, 3), _read(log_path))


def _from_server(body: dict[str, Any], seconds: float, log: str) -> Decoded:
    """llama-server's /completion answer: counts, ids and probabilities as it reports them."""
    raw_timings = body.get("timings")
    timings: dict[str, Any] = raw_timings if isinstance(raw_timings, dict) else {}
    count = timings.get("predicted_n", body.get("tokens_predicted", 0))
    raw_ids = body.get("tokens")
    ids = tuple(int(t) for t in raw_ids if _is_int(t)) if isinstance(raw_ids, list) else None
    if ids is not None and raw_ids is not None and len(ids) != len(raw_ids):
        ids = ()  # something other than token ids: no proof
    probs = body.get("completion_probabilities")
    logprobs = prob_ids = None
    if isinstance(probs, list):
        entries = [p if isinstance(p, dict) else {} for p in probs]
        logprobs = tuple(_number(e.get("logprob", e.get("prob"))) for e in entries)
        prob_ids = tuple(int(e["id"]) if _is_int(e.get("id")) else -1 for e in entries)
    return Decoded(int(count) if _is_int(count) else 0, str(body.get("content", "")), seconds,
                   timings.get("predicted_per_second"), log, timings.get("prompt_per_second"),
                   token_ids=ids, logprobs=logprobs, prob_ids=prob_ids)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _with_completion(decoder: Path, model: Path, args: Sequence[str], n_predict: int, log_path: Path,
                     prompt: str, timeout: float) -> Decoded:
    t0 = time.monotonic()
    argv: list[str | Path] = [decoder, "-m", model, "-p", prompt, "-n", str(n_predict), "--temp", "0", "--ignore-eos", "-no-cnv",
            "-c", "512", *args]
    try:
        res = runner.run(argv, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StepError(f"{decoder.name} did not finish within {timeout:.0f}s") from None
    log_path.write_text(res.stdout + res.stderr)
    if res.returncode < 0:
        raise Crashed(decoder.name, res.returncode, _tail(log_path), str(log_path))
    if res.returncode != 0:
        raise CommandFailed([str(a) for a in argv], res.returncode, _tail(log_path), str(log_path))
    return _from_completion(res.stdout, res.stderr, round(time.monotonic() - t0, 3))


def _from_completion(stdout: str, stderr: str, seconds: float) -> Decoded:
    """llama-completion's count: its sampler's ``samplers time = ... / N tokens`` (older: ``sampling time = ... / N runs``) (one sample per
    generated token), else ``eval time = ... / N runs`` + 1 (the last token sampled is not evaluated).
    Neither line: 0, no proof."""
    evals = re.search(r"\beval time =.*?/\s*(\d+) runs.*?([\d.]+) tokens per second", stderr)
    sampled = re.search(r"sampl(?:ers?|ing) time =.*?/\s*(\d+) (?:tokens|runs)", stderr)
    count = int(sampled.group(1)) if sampled else int(evals.group(1)) + 1 if evals else 0
    return Decoded(count, stdout, seconds, float(evals.group(2)) if evals else None, stdout + stderr)


def _exit_code(proc: subprocess.Popen[bytes] | None, wait: float = 10.0) -> int | None:
    """The server's exit code once it has exited (it may take a moment to die), else None."""
    if proc is None:
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    return None


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")
    return ""


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(_read(path).rstrip().splitlines()[-lines:])


_FEATURE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*(\S+)\s*$")


def features(log: str) -> dict[str, dict[str, str]]:
    """ggml's ``system_info`` line, per backend: ``{"CPU": {"AVX2": "1", ...}, ...}``.

    Source: ``llama_print_system_info`` (src/llama.cpp) prints ``NAME : KEY = VALUE | ...`` for
    each backend that reports features; ggml-cpu lists the instruction sets it was compiled with.
    """
    line = next((ln for ln in log.splitlines() if "system_info:" in ln), "")
    found: dict[str, dict[str, str]] = {}
    current: str | None = None
    for part in line.split("|"):
        if " : " in part:
            name, _, rest = part.partition(" : ")
            current = name.strip()
            found[current] = {}
            part = rest
        m = _FEATURE.match(part)
        if current is not None and m:
            found[current][m.group(1)] = m.group(2)
    return found


def cpu_variant(log: str) -> str | None:
    """The all-variants CPU library ggml loaded (``load_backend: loaded CPU backend from .../libggml-cpu-<tag>.so``)."""
    m = re.search(r"loaded CPU backend from \S*libggml-cpu-([\w.]+)\.(?:so|dylib|dll)", log)
    return m.group(1) if m else None


def no_gpu(log: str) -> bool:
    """llama.cpp says so when ``-ngl`` finds no device (common/arg.cpp)."""
    return "no usable GPU found" in log
