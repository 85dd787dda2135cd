"""A small upstream whose CMake project builds a ``llama-server`` the harness really talks to, for
``harness bisect --check smoke`` (the ``decode`` smoke check) and ``--check 'bench:...'``.

The stand-in is a real HTTP server (Python's standard library, run by this test session's
interpreter): ``configure_file`` writes ``server.py.in`` as ``<build>/bin/llama-server`` with the
build's ``LLAMA_BUILD_COMMIT`` (``--version`` prints it, as llama.cpp's tools do).  It speaks what
the harness asks of llama-server: ``--help`` in common/arg.cpp's layout (the bench's flag check,
the decode check's ``--log-verbosity`` probe), ``-m`` (a file starting with GGUF's magic, else it
exits 1 as a failed model load), ``--host``/``--port``, ``GET /health``, ``POST /completion``
(``tokens``, ``completion_probabilities``, ``timings.predicted_n``: what decoder.problem checks)
and ``POST /v1/chat/completions`` (``timings.predicted_ms``: the bench's tokens/s).  Each generated
token takes ``DELAY`` seconds of wall time, and the timings are what the server measured.

master: c0 (base) -> c1 ... c24, each "area: change k (#2000+k)" appending to other.txt, except
  c7   DELAY 0.5 ms -> 5 ms per token (10x fewer tokens/s: at most 200, from about 2000)
  c15  the first completion aborts (SIGABRT, as a failed GGML_ASSERT does) ... c20 fixes it
refs/pull/1/head: adds notes.txt (always applies).
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.source import sdist_upstream as offline
from tests.bisect_world import World, git, repositories

URL = "https://github.com/bisect-server-test/llama.cpp"
N = 24
SLOW, CRASH, FIX = 7, 15, 20
FAST_DELAY, SLOW_DELAY = 0.0005, 0.005  # seconds per generated token

CMAKE = """cmake_minimum_required(VERSION 3.14)
project(tinyserver NONE)
if(NOT DEFINED LLAMA_BUILD_COMMIT)
  set(LLAMA_BUILD_COMMIT unknown)
endif()
# the source's permissions (100755 in git) go with it: bin/llama-server is executable
configure_file(server.py.in ${CMAKE_BINARY_DIR}/bin/llama-server @ONLY)
add_custom_target(llama-server ALL DEPENDS ${CMAKE_BINARY_DIR}/bin/llama-server)
"""

SERVER = '''#!{python}
"""A stand-in llama-server: the HTTP API the harness uses, with real per-token waits."""
import json, os, resource, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STAMP = "@LLAMA_BUILD_COMMIT@"
DELAY = {delay!r}  # seconds per generated token
CRASH = {crash!r}  # abort at the first completion, as a failed GGML_ASSERT does
VOCAB = 100
HELP = """----- common params -----

-h,    --help, --usage                  print usage and exit
--version                               show version and build info
-t,    --threads N                      number of CPU threads to use during generation
-c,    --ctx-size N                     size of the prompt context
-np,   --parallel N                     number of server slots
-nr,   --no-repack                      disable weight repacking
-lv,   --verbosity, --log-verbosity N   set the verbosity threshold
-m,    --model FNAME                    model path to load
--host HOST                             ip address to listen
--port PORT                             port to listen
--api-key-file FNAME                    path to file containing API keys
"""
VALUED = {{"-t", "--threads", "-c", "--ctx-size", "-np", "--parallel", "-lv", "--verbosity", "--log-verbosity",
          "-m", "--model", "--host", "--port", "--api-key-file"}}
FLAGS = {{"-nr", "--no-repack"}}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def generate(prompt, n):
    """n tokens, DELAY seconds each, timed as llama-server times them."""
    if CRASH:
        log("ggml/src/ggml-cpu/ops.cpp:1234: GGML_ASSERT(ne00 % 32 == 0) failed")
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.abort()
    t0 = time.perf_counter()
    ids = []
    for i in range(n):
        time.sleep(DELAY)
        ids.append(3 + (len(prompt) + 7 * i) % (VOCAB - 3))
    ms = (time.perf_counter() - t0) * 1000.0
    text = "".join(chr(0x21 + t % 90) for t in ids)
    timings = {{"prompt_n": len(prompt), "prompt_ms": 1.0, "prompt_per_second": len(prompt) * 1000.0,
               "predicted_n": n, "predicted_ms": ms, "predicted_per_second": n / ms * 1000.0 if ms > 0 else 0.0}}
    log(f"slot print_timing: id  0 | task 0 | eval time = {{ms:.2f}} ms / {{n}} tokens")
    return ids, text, timings


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        log("srv  log_server_r: " + fmt % args)

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {{"status": "ok"}})
        self.answer(404, {{"error": {{"code": 404, "message": "File Not Found"}}}})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{{}}")
        n = int(req.get("n_predict", 16))
        if self.path == "/completion":
            ids, text, timings = generate(str(req.get("prompt", "")), n)
            body = {{"content": text, "tokens_predicted": n, "timings": timings, "stop": True}}
            if req.get("return_tokens"):
                body["tokens"] = ids
            if int(req.get("n_probs", 0)) > 0:
                body["completion_probabilities"] = [{{"id": t, "token": chr(0x21 + t % 90), "logprob": -0.25}}
                                                    for t in ids]
            return self.answer(200, body)
        if self.path == "/v1/chat/completions":
            prompt = "".join(str(m.get("content", "")) for m in req.get("messages", []))
            ids, text, timings = generate(prompt, n)
            return self.answer(200, {{"choices": [{{"index": 0, "finish_reason": "length",
                                                  "message": {{"role": "assistant", "content": text}}}}],
                                     "usage": {{"completion_tokens": n}}, "timings": timings}})
        self.answer(404, {{"error": {{"code": 404, "message": "File Not Found"}}}})


def main(argv):
    if "--version" in argv:
        print(f"version: 1 ({{STAMP}})\\nbuilt with a stand-in for x86_64-linux-gnu")
        return 0
    if "--help" in argv or "-h" in argv:
        print(HELP)
        return 0
    opts, i = {{}}, 0
    while i < len(argv):
        if argv[i] in FLAGS:
            i += 1
        elif argv[i] in VALUED and i + 1 < len(argv):
            opts[argv[i]] = argv[i + 1]
            i += 2
        else:
            log(f"error: invalid argument: {{argv[i]}}")
            return 1
    model = opts.get("-m") or opts.get("--model")
    try:
        with open(model or "", "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        magic = b""
        log(f"gguf_init_from_file: failed to open '{{model}}': {{exc}}")
    if magic != b"GGUF":
        log(f"llama_model_load: error loading model: {{model}} is not a GGUF file\\nmain: exiting due to model loading error")
        return 1
    srv = ThreadingHTTPServer((opts.get("--host", "127.0.0.1"), int(opts.get("--port", "8080"))), Handler)
    srv.daemon_threads = True
    log(f"build: 1 ({{STAMP}})\\nmain: model loaded\\nmain: server is listening on http://{{srv.server_address[0]}}:{{srv.server_address[1]}}")
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


class ServerWorld(World):
    @property
    def env(self) -> dict[str, str]:
        return offline.redirect_env({URL: self.upstream})


def server_source(*, delay: float = FAST_DELAY, crash: bool = False) -> str:
    return SERVER.format(python=sys.executable, delay=delay, crash=crash)


def _write(work: Path, name: str, text: str, mode: int = 0o644) -> None:
    (work / name).write_text(text)
    (work / name).chmod(mode)
    git(work, "add", name)


def build(root: Path) -> ServerWorld:
    upstream, work = repositories(root)
    w = ServerWorld(root, upstream)
    _write(work, "CMakeLists.txt", CMAKE)
    _write(work, "server.py.in", server_source(), 0o755)
    _write(work, "other.txt", "changes:\n")
    git(work, "commit", "-qm", "tiny server: the base", date=1790000000)
    w.commits.append(git(work, "rev-parse", "HEAD"))
    git(work, "checkout", "-q", "-b", "pr1")
    _write(work, "notes.txt", "PR 1 notes\n")
    git(work, "commit", "-qm", "notes: PR 1", date=1790000001)
    w.prs[1] = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "master")

    delay, crash = FAST_DELAY, False
    for k in range(1, N + 1):
        with open(work / "other.txt", "a") as f:
            f.write(f"change {k}\n")
        git(work, "add", "other.txt")
        subject = f"area: change {k} (#{2000 + k})"
        if k == SLOW:
            delay, subject = SLOW_DELAY, f"server: sample each token the slow way (#{2000 + k})"
        if k == CRASH:
            crash, subject = True, f"ggml: an assert that fails on the first completion (#{2000 + k})"
        if k == FIX:
            crash, subject = False, f"ggml: fix the assert (#{2000 + k})"
        if k in (SLOW, CRASH, FIX):
            _write(work, "server.py.in", server_source(delay=delay, crash=crash), 0o755)
        git(work, "commit", "-qm", subject, date=1790000000 + 3600 * k)
        w.commits.append(git(work, "rev-parse", "HEAD"))
    git(work, "push", "-q", str(upstream), "master:refs/heads/master", f"{w.prs[1]}:refs/pull/1/head")
    return w


def recipe_text(*, smoke: list[str], nightly_smoke: list[str] | None = None) -> str:
    return (f"name: tinyserver\nupstream:\n  repo: {URL}\n  ref: master\nstack:\n  - pr: 1\n"
            f"build:\n  backends: [cpu]\n  targets: [llama-server]\n  smoke: {smoke}\n"
            f"nightly:\n  smoke: {nightly_smoke or smoke}\n")
