"""harness serve: argv composition (fast) and a real llama-server on SmolLM2 (slow)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from harness import cli
from harness.errors import InputError
from harness.recipe.schema import Serve
from harness.serve import server
from tests.conftest import REPO, run_harness, write_recipe

KNOWN = ("none", "draft-simple", "draft-mtp", "ngram-simple", "ngram-mod", "ngram-cache")


def served_recipe(tmp_path: Path, llama_bin: Path, serve: str = "{ctx: 512}") -> tuple[Path, Path]:
    """A one-backend recipe and a builds dir whose mini/cpu/bin is the session's llama.cpp bin."""
    recipe = write_recipe(
        tmp_path / "repo", "mini", f"name: mini\nbuild: {{backends: [cpu]}}\nserve: {serve}\n"
    )
    builds = tmp_path / "builds"
    (builds / "mini" / "cpu").mkdir(parents=True)
    (builds / "mini" / "cpu" / "bin").symlink_to(llama_bin.resolve())
    return recipe, builds


def env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != server.KEY_ENV and not k.startswith("LLAMA_ARG_")}


# --- fast: argv composition ---------------------------------------------------------------


def test_recipe_serve_section_becomes_flags() -> None:
    serve = Serve(spec_type="ngram-mod", draft_n_max=4, ctx=2048, args=["-t", "2"])
    args = server.compose_args(serve, backend="cpu")
    assert args == ["-c", "2048", "--spec-type", "ngram-mod", "--spec-ngram-mod-n-max", "4", "-t", "2"]


def test_gpu_backend_offloads_all_layers_cpu_does_not() -> None:
    assert server.compose_args(Serve(), backend="cuda")[:2] == ["-ngl", "all"]
    assert "-ngl" not in server.compose_args(Serve(), backend="cpu")
    assert server.compose_args(Serve(ngl=20), backend="cpu")[:2] == ["-ngl", "20"]


def test_cli_flags_override_the_recipe() -> None:
    serve = Serve(spec_type="ngram-mod", draft_n_max=4)
    mtp = server.compose_args(serve, backend="cpu", spec=["draft-mtp"], depth=2, extra=["--jinja"])
    assert mtp == ["--spec-type", "draft-mtp", "--spec-draft-n-max", "2", "--jinja"]
    assert server.compose_args(serve, backend="cpu", spec=[]) == []
    draft = server.compose_args(Serve(), backend="cpu", draft=Path("/m/d.gguf"), depth=3)
    assert draft == ["--spec-type", "draft-simple", "-md", "/m/d.gguf", "--spec-draft-n-max", "3"]
    # ngram-simple's depth is its m-gram size; ngram-cache has none
    assert server.spec_flags(["ngram-simple", "ngram-cache"], depth=5) == [
        "--spec-type", "ngram-simple,ngram-cache", "--spec-ngram-simple-size-m", "5",
    ]  # fmt: skip


def test_spec_names_are_checked_with_a_suggestion() -> None:
    assert server.resolve_spec(["mtp", "none", "ngram-mod"], KNOWN) == ["draft-mtp", "ngram-mod"]
    with pytest.raises(InputError) as exc:
        server.resolve_spec(["ngram-mdo"], KNOWN)
    assert "did you mean 'ngram-mod'" in str(exc.value)


def test_api_key_never_goes_on_the_command_line() -> None:
    with pytest.raises(InputError, match="command line"):
        server.compose_args(Serve(args=["--api-key", "secret"]), backend="cpu")


def test_arguments_after_double_dash_reach_llama_server() -> None:
    ns = cli.build_parser().parse_args(
        ["serve", "r.yaml", "--model", "m.gguf", "--json", "--", "-t", "2", "--json"]
    )
    assert (ns.recipe, ns.json, ns.server_args) == ("r.yaml", True, ["-t", "2", "--json"])


def test_non_loopback_bind_without_key_is_refused(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "repo", "mini", "name: mini\n")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    result = run_harness(
        "serve", recipe, "--model", model, "--host", "0.0.0.0", env=env_without_key(), timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "without an API key" in result.stderr


# --- slow: the real server -----------------------------------------------------------------


def _start_serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--json", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 180)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"harness serve printed no URL; stderr:\n{err}")
    return proc, json.loads(line)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_serve_answers_completions_and_ctrl_c_stops_the_group(
    tmp_path: Path, llama_bin: Path, smollm2_gguf: Path
) -> None:
    recipe, builds = served_recipe(tmp_path, llama_bin)
    proc, info = _start_serve(
        [str(recipe), "--model", str(smollm2_gguf), "--builds-dir", str(builds), "--", "-t", "2"],
        env_without_key(),
    )
    try:
        assert info["backend"] == "cpu" and "-ngl" not in info["argv"]  # type: ignore[operator]
        r = requests.post(
            f"{info['url']}/completion",
            json={"prompt": "The capital of France is", "n_predict": 8, "temperature": 0, "seed": 1},
            timeout=120,
        )
        r.raise_for_status()
        body = r.json()
        assert body["content"].strip() and body["timings"]["predicted_n"] > 0
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 130
    assert _group_gone(int(info["pid"]))  # type: ignore[call-overload]


@pytest.mark.slow
def test_non_loopback_bind_uses_a_private_key_file(
    tmp_path: Path, llama_bin: Path, smollm2_gguf: Path
) -> None:
    recipe, builds = served_recipe(tmp_path, llama_bin)
    env = {**env_without_key(), server.KEY_ENV: "s3cret-test-key"}
    proc, info = _start_serve(
        [str(recipe), "--model", str(smollm2_gguf), "--builds-dir", str(builds), "--host", "0.0.0.0"], env
    )
    try:
        argv = [str(a) for a in info["argv"]]  # type: ignore[attr-defined]
        assert "s3cret-test-key" not in " ".join(argv)
        key_file = Path(argv[argv.index("--api-key-file") + 1])
        assert not key_file.exists()  # 0600 in a 0700 dir, deleted once the server answered (it read it)
        assert "s3cret-test-key" not in Path(str(info["log"])).read_text()
        url, body = f"{info['url']}/completion", {"prompt": "Hi", "n_predict": 2}
        assert requests.post(url, json=body, timeout=60).status_code == 401
        ok = requests.post(url, json=body, headers={"Authorization": "Bearer s3cret-test-key"}, timeout=120)
        assert ok.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert _group_gone(int(info["pid"]))  # type: ignore[call-overload]
    assert not key_file.exists()
