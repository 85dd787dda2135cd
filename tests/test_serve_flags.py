"""Serve flags from recipe keys (tensor placement, KV cache types, MoE offload), checked against the
binary's own ``--help`` before anything starts: the session's real llama-server, and a fork's.

The fork is tests/data/fake_llama built with ``FAKE_HELP=turboquant``: a real CMake build
(seconds) whose llama-server prints common/arg.cpp's help layout with what AtomicBot-ai's
TurboQuant fork adds (the turbo2/3/4 KV cache types, the speculative types ``mtp`` and
``nextn``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.recipe.schema import Serve
from harness.serve import server, server_help
from harness.smoke import tiny_model
from tests import fake_manifest, models
from tests.conftest import REPO, run_harness, write_recipe
from tests.test_decode_smoke import _upstream
from tests.test_serve import served_recipe

SERVE = r"""{ctx: 2048, tensor_overrides: ['mtp\..*=CPU', 'exps=CPU'], n_cpu_moe: 8,
         cache_type_k: q8_0, cache_type_v: q4_0, spec_type: ngram-mod, draft_n_max: 6, args: [--jinja]}"""


# common/arg.cpp's layout, as the TurboQuant fork prints it (its allowed values wrap at 70 columns)
FORK_HELP = """----- common params -----

-ctk,  --cache-type-k TYPE              KV cache data type for K
                                        allowed values: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1,
                                        turbo2, turbo3, turbo4
                                        (default: f16)
                                        (env: LLAMA_ARG_CACHE_TYPE_K)
-kvo,  --kv-offload, -nkvo, --no-kv-offload
                                        whether to enable KV cache offloading (default: enabled)
-ot,   --override-tensor <tensor name pattern>=<buffer type>,...
                                        override tensor buffer type
--control-vector-layer-range START END
                                        layer range to apply the control vector(s) to, start and end inclusive
--spec-type none,draft-simple,draft-mtp,mtp,nextn
                                        comma-separated list of types of speculative decoding to use
--draft, --draft-n, --draft-max N       the argument has been removed. use --spec-draft-n-max or
                                        --spec-ngram-mod-n-max
                                        (env: LLAMA_ARG_DRAFT_MAX)
"""


def test_help_layout_is_read_option_by_option() -> None:
    offered = server_help.parse(FORK_HELP)
    assert offered.choices("--cache-type-k")[-3:] == ("turbo2", "turbo3", "turbo4")
    assert offered.spec_types == ("none", "draft-simple", "draft-mtp", "mtp", "nextn")
    assert offered.options["-nkvo"].n_values == 0 and offered.options["-ot"].n_values == 1
    assert offered.options["--control-vector-layer-range"].n_values == 2
    assert offered.problems(["-ctk", "turbo3", "-nkvo", "--spec-type", "mtp,draft-mtp", "--cache_type_k", "q8_0"]) == []
    assert offered.problems(["--draft", "3", "-ctk", "turb3", "--nope", "1", "7"]) == [
        "--draft: the argument has been removed. use --spec-draft-n-max or --spec-ngram-mod-n-max",
        "-ctk 'turb3': not a value this llama-server accepts (did you mean 'turbo3'?); it accepts f32, f16, bf16, "
        "q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1, turbo2, turbo3, turbo4",
        "unknown flag '--nope'",
        "'7' is not a flag (llama-server takes no positional arguments)",
    ]  # fmt: skip


def test_recipe_keys_become_flags() -> None:
    serve = Serve(ctx=4096, tensor_overrides=["exps=CPU", r"mtp\..*=CUDA0"], n_cpu_moe=3,
                  cache_type_k="turbo3", cache_type_v="q8_0")  # fmt: skip
    assert server.compose_args(serve, backend="cuda") == [
        "-ngl", "all", "-c", "4096", "-ot", r"exps=CPU,mtp\..*=CUDA0", "--n-cpu-moe", "3", "-ctk", "turbo3", "-ctv", "q8_0",
    ]  # fmt: skip
    # a draft without a type that uses one: the type its audit implies (an MTP draft: draft-mtp)
    mtp = server.compose_args(Serve(), backend="cpu", draft=Path("/m/a.gguf"), draft_type="draft-mtp")
    assert mtp == ["--spec-type", "draft-mtp", "-md", "/m/a.gguf"]
    assert server.draft_without_type(["-t", "2", "-md", "/m/a.gguf"]) == "/m/a.gguf"
    assert server.draft_without_type(["--model-draft", "/m/a.gguf", "--spec-type", "draft-simple"]) is None


def _model(tmp_path: Path) -> Path:
    # a real (tiny) model: serve reads --model before anything starts; llama-server never loads it here
    return tiny_model.write(tmp_path / "model.gguf")


def _serve(recipe: Path, builds: Path, model: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_harness("serve", recipe, "--model", model, "--builds-dir", builds, *args, timeout=120)


@pytest.mark.slow
def test_the_real_builds_help_is_what_is_checked(llama_bin: Path) -> None:
    offered = server_help.read(llama_bin / "llama-server")
    assert {"draft-mtp", "draft-simple", "ngram-mod"} <= set(offered.spec_types)
    assert offered.choices("-ctk") == offered.choices("--cache-type-k") and "q8_0" in offered.choices("-ctk")
    assert "turbo3" not in offered.choices("-ctv")
    assert offered.options["-ot"].n_values == 1 and offered.options["--no-repack"].n_values == 0
    assert offered.options["--control-vector-layer-range"].n_values == 2
    fine = ["-ot", "exps=CPU", "--n-cpu-moe", "4", "-ctk", "q8_0", "-fa", "on", "--jinja", "-nr", "--spec_draft_n_max", "3"]
    assert offered.problems(fine) == []


@pytest.mark.slow
def test_dry_run_prints_the_checked_argv(tmp_path: Path, llama_bin: Path) -> None:
    recipe, builds = served_recipe(tmp_path, llama_bin, serve=SERVE)
    model = _model(tmp_path)
    res = _serve(recipe, builds, model, "--dry-run", "--json", "--", "-t", "2")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["checked"] is True and out["draft"] is None
    assert out["argv"] == [
        str((llama_bin / "llama-server").resolve()), "-m", str(model.resolve()),
        "-c", "2048", "-ot", r"mtp\..*=CPU,exps=CPU", "--n-cpu-moe", "8", "-ctk", "q8_0", "-ctv", "q4_0",
        "--spec-type", "ngram-mod", "--spec-ngram-mod-n-max", "6", "--jinja", "-t", "2",
        "--host", "127.0.0.1", "--port", "PORT",
    ]  # fmt: skip
    plain = _serve(recipe, builds, model, "--dry-run")
    assert plain.returncode == 0 and plain.stdout.startswith(str((llama_bin / "llama-server").resolve()))
    assert r"'mtp\..*=CPU,exps=CPU'" in plain.stdout  # shell-quoted, ready to paste (a CPU build has no CUDA0)


@pytest.mark.slow
@pytest.mark.parametrize(("serve", "after", "expected"), [
    ("{args: [--n-cpu-moee, '3']}", [], "unknown flag '--n-cpu-moee' (did you mean '--n-cpu-moe'?)"),
    ("{cache_type_k: turbo3}", [], "-ctk 'turbo3': not a value this llama-server accepts"),
    ("{spec_type: ngram-mdo}", [], "did you mean 'ngram-mod'?"),
    ("{}", ["--draft-max", "4"], "--draft-max: the argument has been removed. use --spec-draft-n-max"),
    ("{}", ["-t"], "-t expects a value"),
    ("{}", ["--spec-type", "draft-mpt"], "--spec-type 'draft-mpt': not a value this llama-server accepts (did you mean"),
])  # fmt: skip
def test_what_the_binary_would_refuse_is_exit_2_before_it_starts(
    tmp_path: Path, llama_bin: Path, serve: str, after: list[str], expected: str
) -> None:
    recipe, builds = served_recipe(tmp_path, llama_bin, serve=serve)
    res = _serve(recipe, builds, _model(tmp_path), *(["--", *after] if after else []))  # no --dry-run
    assert res.returncode == 2, res.stderr
    assert expected in res.stderr and "Traceback" not in res.stderr
    assert ("the arguments after --" if after else f"{recipe}: serve:") in res.stderr or "speculative type" in res.stderr
    assert "llama-server ready" not in res.stderr


@pytest.mark.slow
def test_md_after_double_dash_without_a_spec_type_is_warned_about(tmp_path: Path, llama_bin: Path) -> None:
    recipe, builds = served_recipe(tmp_path, llama_bin)
    model = _model(tmp_path)
    plain_draft = tiny_model.write(tmp_path / "draft.gguf")  # a llama model: llama.cpp infers nothing from it
    res = _serve(recipe, builds, model, "--dry-run", "--", "-md", plain_draft)
    assert res.returncode == 0, res.stderr
    assert f"-md {plain_draft} without --spec-type: llama-server will draft nothing" in res.stderr.replace("\n", " ")
    typed = _serve(recipe, builds, model, "--dry-run", "--", "-md", plain_draft, "--spec-type", "draft-simple")
    assert typed.returncode == 0 and "draft nothing" not in typed.stderr
    # an MTP head: llama.cpp infers draft-mtp from its blk.4.nextn.eh_proj.weight, so no warning
    full = models.write_qwen35(tmp_path / "full.gguf", mtp="full")
    head = tmp_path / "head.gguf"
    assert run_harness("gguf", "extract-mtp", full, "-o", head).returncode == 0
    inferred = _serve(recipe, builds, full, "--dry-run", "--", "-md", head)
    assert inferred.returncode == 0 and "draft nothing" not in inferred.stderr
    # -md is audited like --draft (issue 23): a head of another architecture and vocabulary is exit 2
    foreign = _serve(recipe, builds, model, "--dry-run", "--", "-md", head)
    assert foreign.returncode == 2 and f"draft model {head}" in foreign.stderr and "wrong-target" in foreign.stderr


@pytest.mark.slow
def test_a_draft_type_without_a_draft_model_is_refused(tmp_path: Path, llama_bin: Path) -> None:
    """Issue 23 (a user's report): `serve --spec draft` with no draft exited 0, and llama-server logged
    "draft-simple requires a draft context" and served without drafting."""
    model = _model(tmp_path)
    for serve, args in (("{ctx: 512}", ["--spec", "draft"]), ("{spec_type: draft-simple}", [])):
        recipe, builds = served_recipe(tmp_path / f"r{len(args)}", llama_bin, serve=serve)
        for dry in (["--dry-run"], []):
            res = _serve(recipe, builds, model, *args, *dry)
            assert res.returncode == 2, res.stderr
            assert "--spec-type draft-simple drafts with a draft model, and none is given" in res.stderr
            assert "llama-server ready" not in res.stderr
    recipe, builds = served_recipe(tmp_path / "md", llama_bin)
    draft = tiny_model.write(tmp_path / "draft.gguf")
    res = _serve(recipe, builds, model, "--spec", "draft", "--dry-run", "--", "-md", draft)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_dry_run_prints_rpc_after_the_rpc_backend_check(tmp_path: Path, llama_bin: Path) -> None:
    """Issue 23: `serve --dry-run --rpc ...` dropped --rpc and skipped the RPC-backend check."""
    recipe, builds = served_recipe(tmp_path, llama_bin)
    model = _model(tmp_path)
    root = builds / "mini" / "cpu"
    (root / "manifest.json").write_text(json.dumps(fake_manifest.data()))  # built without RPC
    res = _serve(recipe, builds, model, "--dry-run", "--rpc", "127.0.0.1:50052")
    assert res.returncode == 2 and "has no RPC backend" in res.stderr, res.stderr
    (root / "manifest.json").write_text(json.dumps(fake_manifest.data(rpc={"server": "ggml-rpc-server", "protocol": "7.0.0"})))
    res = _serve(recipe, builds, model, "--dry-run", "--json", "--rpc", "127.0.0.1:50052,10.0.0.2:50052")
    assert res.returncode == 0, res.stderr
    argv = json.loads(res.stdout)["argv"]
    assert argv[argv.index("--rpc") + 1] == "127.0.0.1:50052,10.0.0.2:50052"  # nothing was contacted


def _fake_build(tmp_path: Path, help_kind: str, serve: str) -> tuple[Path, Path]:
    url, sha = _upstream(tmp_path / help_kind)
    recipe = write_recipe(tmp_path / help_kind / "recipes", "fork", f"""upstream: {{repo: {url}, ref: {sha}}}
build:
  targets: [llama-server]
  cmake_args: {{FAKE_CRASH: never, FAKE_HELP: {help_kind}}}
  smoke: [version]
serve: {serve}
""")
    builds = tmp_path / help_kind / "builds"
    res = subprocess.run([sys.executable, "-m", "harness", "build", str(recipe), "--builds-dir", str(builds)],
                         capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return recipe, builds


def test_a_forks_values_are_accepted_where_its_binary_offers_them(tmp_path: Path) -> None:
    serve = "{cache_type_k: turbo3, cache_type_v: turbo4, spec_type: mtp, draft_n_max: 2}"
    recipe, builds = _fake_build(tmp_path, "turboquant", serve)
    res = _serve(recipe, builds, _model(tmp_path), "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    argv = json.loads(res.stdout)["argv"]
    assert argv[3:9] == ["-ctk", "turbo3", "-ctv", "turbo4", "--spec-type", "mtp"]  # its own name, not draft-mtp
    # the same recipe against a binary without them: exit 2, naming what it accepts
    recipe, builds = _fake_build(tmp_path, "upstream", serve)
    res = _serve(recipe, builds, _model(tmp_path), "--dry-run")
    assert res.returncode == 2
    assert "-ctk 'turbo3': not a value this llama-server accepts" in res.stderr and "q5_1" in res.stderr
