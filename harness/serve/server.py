"""llama-server: its command line (speculative modes, draft depth, offload) and its process.

``running_server`` starts one llama-server as a service of harness/runner.py (a session of its
own, so Ctrl-C in the terminal does not reach it and the whole group is stopped together), waits
for ``/health``, and on the way out stops the group: SIGTERM, then SIGKILL after a grace period.

It binds 127.0.0.1 unless told otherwise; any other address needs an API key, which is
written to a 0600 file and passed with ``--api-key-file`` (never on the command line,
never logged).  llama-server reads that file while parsing its arguments, before its HTTP
server starts (common/arg.cpp, tools/server/server.cpp), so the file is deleted as soon as
the server answers anything; a key file whose harness was killed first is deleted by the
next start.  ``LLAMA_API_KEY``, ``LLAMA_ARG_*`` and every other secret (harness/runner.py:
``child_env``) are scrubbed from the server's environment: the echoed argv is the whole
configuration.  The server dies with the harness, even on SIGKILL (harness/lifetime.py).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness import atomic, backends, console, readlimits, runner
from harness.errors import CommandFailed, InputError, StepError
from harness.hosts import free_port, is_loopback

if TYPE_CHECKING:
    from harness.recipe.load import Recipe
    from harness.recipe.schema import Serve

DEFAULT_HOST = "127.0.0.1"
KEY_ENV = "LLAMA_API_KEY"

# How deep each speculative type drafts.  At this llama.cpp (0c1e570) --spec-draft-n-max
# only reaches the draft-model types; the n-gram types each have their own knob.
DEPTH_FLAGS: dict[str, str | None] = {
    "draft-simple": "--spec-draft-n-max",
    "draft-eagle3": "--spec-draft-n-max",
    "draft-mtp": "--spec-draft-n-max",
    "draft-dflash": "--spec-draft-n-max",
    "draft-dspark": "--spec-draft-n-max",
    "ngram-simple": "--spec-ngram-simple-size-m",
    "ngram-map-k": "--spec-ngram-map-k-size-m",
    "ngram-map-k4v": "--spec-ngram-map-k4v-size-m",
    "ngram-mod": "--spec-ngram-mod-n-max",
    "ngram-cache": None,  # fixed at 8 tokens
}
# Friendly names accepted where a speculative type is expected.
ALIASES = {"mtp": "draft-mtp", "draft": "draft-simple"}


# --- the command line -------------------------------------------------------------------


def spec_types(binary: Path) -> tuple[str, ...]:
    """The ``--spec-type`` values this llama-server accepts, read from its ``--help``."""
    from harness.serve import server_help

    types = server_help.read(binary).spec_types
    if not types:
        raise InputError(f"{binary} has no --spec-type option (llama.cpp too old for speculative modes?)")
    return types


def resolve_spec(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """Speculative type names (aliases expanded, ``none`` dropped), each checked against ``known``."""
    types: list[str] = []
    for raw in names:
        name = raw.strip() if raw.strip() in known else ALIASES.get(raw.strip(), raw.strip())
        if name in ("", "none"):
            continue
        if name not in known:
            choices = [*known, *ALIASES]
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"unknown speculative type {raw!r}",
                hint=f"{hint}this llama-server accepts: {', '.join(choices)}",
            )
        if name not in types:
            types.append(name)
    return types


def spec_flags(types: Sequence[str], *, depth: int | None = None, draft: Path | None = None) -> list[str]:
    """``--spec-type`` (plus ``-md`` and each type's depth flag) for already resolved types."""
    if not types:
        return []
    flags = ["--spec-type", ",".join(types)]
    if draft is not None:
        flags += ["-md", str(draft)]
    if depth is not None:
        for depth_flag in dict.fromkeys(DEPTH_FLAGS.get(t) for t in types):
            if depth_flag is not None:
                flags += [depth_flag, str(depth)]
    return flags


def depth_applies(spec_type: str) -> bool:
    return DEPTH_FLAGS.get(spec_type) is not None


def uses_draft_model(spec_type: str) -> bool:
    """Whether a speculative type drafts with a model given by ``-md`` (``draft-*``; a fork's ``mtp``, ``nextn``)."""
    return spec_type.startswith("draft-") or spec_type in FORK_DRAFT_TYPES


# Speculative types of AtomicBot-ai's TurboQuant fork before its b10018 upstream sync (and its aliases after).
FORK_DRAFT_TYPES = ("mtp", "nextn", "draft")


def compose_args(
    serve: Serve,
    *,
    backend: str,
    spec: Sequence[str] | None = None,
    draft: Path | None = None,
    draft_type: str = "draft-simple",
    depth: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """llama-server arguments (all but model, host, port) from a recipe's ``serve:`` section.

    ``spec``: resolved speculative types; ``None`` keeps the recipe's.  A draft model
    without a type that uses one adds ``draft_type`` (``draft-mtp`` for an MTP draft: a
    Gemma 4 assistant or an MTP head).  ``depth`` overrides ``serve.draft_n_max``.  ``-ngl``
    defaults to ``all`` on GPU backends, absent on cpu.  ``serve.tensor_overrides`` become one
    ``-ot`` (llama.cpp warns when a flag is given twice), then ``-ctk``/``-ctv``/``--n-cpu-moe``.
    """
    args = [*recipe_args(serve, backend=backend)]
    types = (
        list(spec)
        if spec is not None
        else [ALIASES.get(t, t) for t in (serve.spec_type or "").split(",") if t and t != "none"]
    )
    if draft is not None and not any(uses_draft_model(t) for t in types):
        types.append(draft_type)
    depth = depth if depth is not None else serve.draft_n_max
    if depth is not None and types and not any(depth_applies(t) for t in types):
        console.warn(f"draft depth {depth} ignored: {','.join(types)} has no depth setting")
    args += spec_flags(types, depth=depth, draft=draft)
    args += [*serve.args, *extra]
    refuse_key_on_command_line(args)
    return args


def recipe_args(serve: Serve, *, backend: str) -> list[str]:
    """Offload, context, tensor placement and KV cache flags of a ``serve:`` section."""
    args: list[str] = []
    ngl = serve.ngl if serve.ngl is not None else ("all" if backends.uses_gpu(backend) else None)
    if ngl is not None:
        args += ["-ngl", str(ngl)]
    if serve.ctx is not None:
        args += ["-c", str(serve.ctx)]
    if serve.tensor_overrides:
        args += ["-ot", ",".join(serve.tensor_overrides)]
    if serve.n_cpu_moe is not None:
        args += ["--n-cpu-moe", str(serve.n_cpu_moe)]
    if serve.cache_type_k is not None:
        args += ["-ctk", serve.cache_type_k]
    if serve.cache_type_v is not None:
        args += ["-ctv", serve.cache_type_v]
    return args


def needs_draft_model(spec_type: str) -> bool:
    """Whether a type drafts nothing without ``-md`` (``draft-mtp`` may use the model's own MTP layers)."""
    return spec_type.startswith("draft-") and spec_type != "draft-mtp"


DRAFT_FLAGS = ("-md", "--model-draft", "--spec-draft-model")


def draft_in(args: Sequence[str]) -> str | None:
    """The draft model file named in ``args`` (``-md FILE``, ``--model-draft=FILE``), else None."""
    for i, a in enumerate(args):
        if a in DRAFT_FLAGS and i + 1 < len(args):
            return args[i + 1]
        flag, eq, value = a.partition("=")
        if eq and flag in DRAFT_FLAGS:
            return value
    return None


def draft_without_type(args: Sequence[str]) -> str | None:
    """The ``-md`` file of ``args`` when no ``--spec-type`` goes with it, else None.

    llama.cpp (common/arg.cpp) then infers a type only from the draft's metadata: an MTP
    head (``blk.N.nextn.eh_proj`` in its last block: draft-mtp) or a DFlash draft; for any
    other draft it drafts nothing.
    """
    draft = draft_in(args)
    if draft is None or "--spec-type" in args:
        return None
    return draft


def refuse_key_on_command_line(args: Sequence[str]) -> None:
    if any(a == "--api-key" or a.startswith("--api-key=") for a in args):
        raise InputError(
            "--api-key would put the key on the command line (visible in ps and logs)",
            hint=f"set {KEY_ENV} or pass --api-key-file FILE to harness instead",
        )


def find_binary(recipe: Recipe, *, backend: str | None, builds_dir: Path | None) -> tuple[Path, str]:
    """The recipe's built llama-server and the backend it was built for (first one built)."""
    from harness.build import published
    for b in [backend] if backend else recipe.spec.build.backends:
        try:
            return published.find_tool(recipe, "llama-server", backend=b, builds_dir=builds_dir), b
        except InputError:
            continue
    return published.find_tool(recipe, "llama-server", backend=backend, builds_dir=builds_dir), backend or ""


# --- the key ----------------------------------------------------------------------------


def api_key(key_file: Path | None = None) -> str | None:
    """The API key: the first key line of ``key_file``, else ``$LLAMA_API_KEY``, else None."""
    if key_file is not None:
        lines = readlimits.read_text(key_file, limit=64 << 10, what="API key file").splitlines()
        keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not keys:
            raise InputError(f"no key in {key_file}")
        return keys[0]
    return os.environ.get(KEY_ENV) or None


def require_key(host: str, key: str | None) -> None:
    """Refuse (exit 2) to bind anything but loopback without an API key."""
    if not is_loopback(host) and not key:
        raise InputError(
            f"refusing to bind {host} without an API key",
            hint=f"set {KEY_ENV} or pass --api-key-file FILE (or bind 127.0.0.1)",
        )


# --- the process ------------------------------------------------------------------------


@dataclass
class Server(runner.ServiceHolder):
    """A running llama-server; ``url`` is where this machine reaches it."""

    url: str
    service: runner.Service = field(repr=False, compare=False)
    api_key: str | None = field(default=None, repr=False)
    key_file: Path | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def to_json(self) -> dict[str, object]:
        return {"url": self.url, "pid": self.pid, "argv": self.argv, "log": str(self.log_path)}


@contextlib.contextmanager
def running_server(
    binary: Path,
    model: Path,
    args: Sequence[str] = (),
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    key: str | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 300.0,
    grace: float = 10.0,
) -> Iterator[Server]:
    """Start llama-server on ``model`` with ``args``, yield it once healthy, then stop its group."""
    require_key(host, key)
    refuse_key_on_command_line(args)
    port = port or free_port(host)
    _sweep_run_dirs()
    key_dir = Path(tempfile.mkdtemp(prefix=f"{KEY_DIR_PREFIX}{os.getpid()}-"))  # 0700
    if log_path is None:
        log_path = key_dir / "llama-server.log"
    argv = [str(binary), "-m", str(model), *args, "--host", host, "--port", str(port)]
    if key:
        key_file = key_dir / "api-key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        argv += ["--api-key-file", str(key_file)]
    connect = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with runner.service(argv, log_path=log_path, env=_server_env(), grace=grace) as service:
            server = Server(url=_url(connect, port), service=service, api_key=key,
                            key_file=key_dir / "api-key" if key else None)
            _wait_ready(server, ready_timeout)
            yield server
    finally:
        if log_path.parent != key_dir:
            shutil.rmtree(key_dir, ignore_errors=True)
        else:  # the log lives with the key: keep the log, drop the key
            with contextlib.suppress(FileNotFoundError):
                (key_dir / "api-key").unlink()


def _wait_ready(server: Server, timeout: float) -> None:
    import requests

    def healthy() -> bool | None:
        with contextlib.suppress(requests.RequestException):
            status = requests.get(f"{server.url}/health", timeout=2).status_code
            _forget_key(server)  # it answers: its arguments, the key file among them, have been read
            if status == 200:
                return True
        return None

    def timed_out() -> StepError:
        tail = "\n".join("    " + line for line in runner.log_tail(server.log_path).splitlines())
        return StepError(f"llama-server did not become ready within {timeout:.0f}s\n  log (last lines):\n{tail}\n"
                         f"  full log: {server.log_path}")

    server.service.wait_ready(
        healthy, timeout=timeout, poll=0.2, timed_out=timed_out,
        exited=lambda code: CommandFailed(server.argv, code, runner.log_tail(server.log_path), log=str(server.log_path)))


KEY_DIR_PREFIX = "harness-server-"


def _forget_key(server: Server) -> None:
    if server.key_file is not None:
        server.key_file.unlink(missing_ok=True)
        server.key_file = None


KEEP_RUN_DIRS = 20  # the newest run dirs of finished harnesses kept, for their llama-server.log
KEEP_RUN_DIRS_S = 24 * 3600  # ... and none older than a day


def _sweep_run_dirs() -> None:
    """Delete the key files of servers whose harness was killed before it could, and the run dirs
    (``harness-server-<pid>-*``: key file and llama-server.log) of finished harnesses beyond the
    newest KEEP_RUN_DIRS or older than a day.  Dirs of a live harness are never touched."""
    finished = []
    for run_dir in Path(tempfile.gettempdir()).glob(f"{KEY_DIR_PREFIX}*-*"):
        pid = run_dir.name[len(KEY_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or atomic.pid_alive(int(pid)) or run_dir.is_symlink() or not run_dir.is_dir():
            continue
        with contextlib.suppress(OSError):
            (run_dir / "api-key").unlink(missing_ok=True)
            finished.append((run_dir.stat().st_mtime, run_dir))
    finished.sort(reverse=True)
    now = time.time()
    for i, (mtime, run_dir) in enumerate(finished):
        if i >= KEEP_RUN_DIRS or now - mtime > KEEP_RUN_DIRS_S:
            shutil.rmtree(run_dir, ignore_errors=True)


def _server_env() -> dict[str, str]:
    env = {}
    for name, value in os.environ.items():
        if name.startswith("LLAMA_ARG_"):
            console.warn(
                f"ignoring {name} from the environment: llama-server gets its flags from the command line"
            )
        elif name != KEY_ENV:
            env[name] = value
    return env


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
