"""The command line itself: JSON on failure for every command, flags after the verb,
passthrough after ``--``, shell completion, ``doctor RECIPE``, the no-op fast path and the
toolchain version cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.build import toolchain, uptodate
from tests import fake_manifest
from tests.conftest import REPO, run_harness, write_recipe

DATA = Path(__file__).parent / "data"
BAD_RECIPE = DATA / "bad_recipes" / "unknown-keys.yaml"  # line 4: upstream.reff: unknown key
BAD_GGUF = DATA / "bad_gguf" / "bad_magic.gguf"
ERROR_KEYS = {"kind", "message", "file", "line", "key", "exit_code"}

# one failing command line per command (and sub-command); every verb of cli.COMMANDS is here
FAILING: dict[str, list[str]] = {
    "validate": ["validate", str(BAD_RECIPE)],
    "lock": ["lock", str(BAD_RECIPE)],
    "prepare": ["prepare", str(BAD_RECIPE)],
    "patches export": ["patches", "export", str(BAD_RECIPE)],
    "build": ["build", str(BAD_RECIPE)],
    "verify": ["verify", str(BAD_RECIPE)],
    "pack": ["pack", str(BAD_RECIPE)],
    "cache ls": ["cache", "ls", str(BAD_RECIPE)],
    "doctor": ["doctor", str(BAD_RECIPE)],
    "nightly": ["nightly", str(BAD_RECIPE)],
    "bisect": ["bisect", str(BAD_RECIPE), "--check", "apply"],
    "gguf inspect": ["gguf", "inspect", str(BAD_GGUF)],
    "gguf audit": ["gguf", "audit", str(BAD_GGUF)],
    "gguf extract-mtp": ["gguf", "extract-mtp", str(BAD_GGUF), "-o", "/nonexistent/out.gguf"],
    "gguf graft": ["gguf", "graft", str(BAD_GGUF), str(BAD_GGUF), "-o", "/nonexistent/out.gguf"],
    "convert": ["convert", str(BAD_RECIPE)],
    "imatrix": ["imatrix", str(BAD_RECIPE)],
    "quantize": ["quantize", str(BAD_RECIPE)],
    "pipeline": ["pipeline", str(BAD_RECIPE)],
    "serve": ["serve", str(BAD_RECIPE), "--model", str(BAD_GGUF)],
    "bench": ["bench", str(BAD_RECIPE), "--model", str(BAD_GGUF)],
    "rpc-server": ["rpc-server", str(BAD_RECIPE)],
    "quality": ["quality", str(BAD_GGUF), "--reference", str(BAD_GGUF), "--recipe", str(BAD_RECIPE)],
    "completion": ["completion", "tcsh"],  # not a shell it knows: argparse refuses it
    "usage: missing argument": ["build"],
    "usage: unknown flag": ["validate", str(BAD_RECIPE), "--no-such-flag"],
}


def test_every_command_has_a_failing_case() -> None:
    assert {case.split()[0] for case in FAILING} >= set(cli.COMMANDS)


@pytest.mark.parametrize("case", FAILING, ids=list(FAILING))
def test_failure_prints_one_json_object(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([*FAILING[case], "--json"])
    out, err = capsys.readouterr()
    data = json.loads(out)  # exactly one JSON document on stdout, nothing else
    assert data["ok"] is False and set(data["error"]) >= ERROR_KEYS, data
    error = data["error"]
    assert code == error["exit_code"] == 2, err
    assert error["message"] and error["message"].splitlines()[0] in err  # people still get the message
    assert "Traceback" not in err
    if FAILING[case][-1] == str(BAD_RECIPE):  # recipe problems carry file, line and key as fields
        assert (error["kind"], error["file"], error["line"], error["key"]) == ("input", str(BAD_RECIPE), 4, "upstream.reff")
        assert [p["key"] for p in error["problems"]] == ["upstream.reff", "stak"]
    elif case.startswith(("usage", "completion")):
        assert error["kind"] == "usage" and error["usage"].startswith("usage: harness")


def test_without_json_stdout_stays_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", str(BAD_RECIPE)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{BAD_RECIPE}:4: upstream.reff: unknown key" in err


def test_validate_json_lists_every_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    good = REPO / "recipes" / "demo.yaml"
    assert cli.main(["validate", str(good), str(BAD_RECIPE), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert [(r["recipe"], r["ok"]) for r in error["recipes"]] == [(str(good), True), (str(BAD_RECIPE), False)]


def test_common_flags_after_the_verb() -> None:
    parse = cli.build_parser().parse_args
    ns = parse(["build", "r.yaml", "-v", "--debug"])
    assert (ns.verbose, ns.quiet, ns.debug) == (True, False, True)
    ns = parse(["-q", "gguf", "inspect", "f.gguf", "-v"])
    assert (ns.verbose, ns.quiet, ns.debug) == (True, True, False)
    ns = parse(["-v", "doctor"])
    assert (ns.verbose, ns.quiet) == (True, False)


def test_debug_after_the_verb_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(BAD_RECIPE), "--debug"]) == 2  # the exit code it has without --debug
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "upstream.reff" in err


@pytest.mark.parametrize("verb", ["serve", "bench"])
def test_arguments_after_double_dash_reach_llama_server(verb: str) -> None:
    parse = cli.build_parser().parse_args
    ns = parse([verb, "r.yaml", "--model", "m.gguf", "-v", "--", "--foo", "-m", "x", "--", "--json"])
    assert (ns.recipe, ns.model.name, ns.verbose, ns.json) == ("r.yaml", "m.gguf", True, False)
    assert ns.server_args == ["--foo", "-m", "x", "--", "--json"]
    assert parse([verb, "r.yaml", "--model", "m.gguf"]).server_args == []


def test_help_and_no_op_decision_import_nothing_heavy() -> None:
    heavy = ["pydantic", "rich", "requests", "huggingface_hub", "gguf", "numpy", "matplotlib", "yaml", "filelock",
             "harness.serve.server", "harness.serve.rpc.endpoints"]
    probe = (
        "import sys; from harness import cli; cli.build_parser(); "
        "from harness.commands import build; from harness.build import uptodate; uptodate.check('0' * 32); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert res.stdout.strip() == "[]", res.stdout


def _complete(line: str) -> list[str]:
    """What bash offers at the end of ``line``, through the script of ``harness completion bash``."""
    script = (
        'source <(harness completion bash) && COMP_LINE="$LINE" && COMP_POINT=${#COMP_LINE} && '
        "read -r -a COMP_WORDS <<< \"$LINE\" && COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )) && "
        '_python_argcomplete harness && printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "LINE": line}
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    return [w.strip() for w in res.stdout.splitlines() if w.strip()]


def test_bash_completion_completes_verbs_subcommands_and_flags() -> None:
    assert shutil.which("harness", path=str(Path(sys.executable).parent)), "the harness script is installed"
    assert _complete("harness bui") == ["build"]
    assert set(_complete("harness gguf ")) >= {"inspect", "audit", "extract-mtp", "graft"}
    assert "--no-ccache" in _complete("harness build recipes/demo.yaml --no-cc")
    assert _complete("harness completion f") == ["fish"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    res = run_harness("completion", shell)
    assert res.returncode == 0 and "harness" in res.stdout and "_ARGCOMPLETE" in res.stdout


def _doctor(recipe: Path, **env: str) -> tuple[int, dict[str, dict[str, object]]]:
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    res = run_harness("doctor", recipe, "--json", env={**base, **env}, timeout=300)
    data = json.loads(res.stdout)
    assert data["ok"] is (res.returncode == 0), res.stderr
    return res.returncode, {c["what"]: c for c in data["checks"]}


def test_doctor_recipe_without_model_checks_the_toolchain(tmp_path: Path) -> None:
    code, checks = _doctor(write_recipe(tmp_path, "cpu", "build: {backends: [cpu]}\n"))
    assert code == 0 and checks["cmake"]["ok"] and checks["c++"]["ok"]
    assert not any(w.startswith(("converter", "hugging")) for w in checks)


def test_doctor_recipe_with_model_needs_converter_packages_and_the_hub(tmp_path: Path) -> None:
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", bare], check=True)
    recipe = write_recipe(tmp_path / "repo", "m", f"model:\n  source: HuggingFaceTB/SmolLM2-135M\n  python: {bare}/bin/python\n")
    code, checks = _doctor(recipe, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on port 9
    assert code == 1
    assert not checks["converter python"]["ok"] and "torch" in str(checks["converter python"]["detail"])
    hub = checks["hugging face hub"]
    assert hub["ok"] is False and hub["required"] is True and "127.0.0.1:9" in str(hub["detail"])

    code, checks = _doctor(recipe, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    assert code == 1 and "not in the local cache" in str(checks["hugging face hub"]["detail"])


@pytest.mark.convert  # the converter's python check passes only where torch and transformers are installed
def test_doctor_recipe_with_a_local_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    recipe = write_recipe(tmp_path, "local", f"model:\n  source: {tmp_path / 'ckpt'}\n  python: {sys.executable}\n")
    code, checks = _doctor(recipe)
    assert checks["model source"]["ok"] and "local checkpoint" in str(checks["model source"]["detail"])
    assert checks["converter python"]["ok"], checks["converter python"]  # the test venv has [convert]
    assert code == 0


def test_makefile_targets_have_help_lines() -> None:
    res = subprocess.run(["make", "-s", "help"], capture_output=True, text=True, cwd=REPO, check=True)
    listed = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    assert {"verify", "serve", "bench", "nightly", "ccache"} <= listed


# -- the toolchain version cache ------------------------------------------------------------


def _fake_program(path: Path, version: str) -> Path:
    path.write_text(f'#!/bin/sh\necho run >> "{path}.runs"\necho "{version}"\n')
    path.chmod(0o755)
    return path


def test_toolchain_versions_are_cached_on_path_size_and_mtime(tmp_path: Path) -> None:
    cc = _fake_program(tmp_path / "fakecc", "fakecc 1.0")
    runs = tmp_path / "fakecc.runs"
    assert toolchain.version(str(cc)) == "fakecc 1.0"
    assert toolchain.version(str(cc)) == "fakecc 1.0"
    assert runs.read_text().count("run") == 1  # asked once
    _fake_program(cc, "fakecc 2.0.1")  # an upgrade: another size
    assert toolchain.version(str(cc)) == "fakecc 2.0.1"
    assert runs.read_text().count("run") == 2
    cache = json.loads((Path(os.environ["HARNESS_CACHE"]) / toolchain.CACHE_NAME).read_text())
    (entry,) = [v for k, v in cache.items() if k.startswith(str(cc))]
    assert entry["path"] == str(cc.resolve()) and entry["text"] == "fakecc 2.0.1"


# -- the no-op fast path (harness/build/uptodate.py) ----------------------------------------------


def _published(tmp_path: Path, identity: str) -> Path:
    root = tmp_path / "builds" / "r" / "cpu"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "llama-server").write_text("binary")
    manifest = fake_manifest.data(identity=identity, files={"bin/llama-server": "x"}, timings={"total_s": 1.0})
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_fast_path_answers_only_while_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, lock = tmp_path / "r.yaml", tmp_path / "r.lock"
    recipe.write_text("name: r\n")
    lock.write_text("{}\n")
    cc = _fake_program(tmp_path / "cc", "cc 1")
    monkeypatch.setenv("CC", str(cc))
    tools = tmp_path / "tools"  # first on PATH: a ccache installed there later is a change
    tools.mkdir()
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    root = _published(tmp_path, "id-1")
    key = uptodate.key(recipe, None, tmp_path / "builds", ccache=True)
    result = {"recipe": "r", "backend": "cpu", "path": str(root), "identity": "id-1", "noop": False}

    def record() -> None:
        uptodate.record(key, uptodate.inputs(uptodate.digests([recipe, lock]), ccache=True), [result])

    assert uptodate.check(key) is None  # nothing recorded yet
    record()
    (hit,) = uptodate.check(key) or []
    assert hit["noop"] is True and hit["stamp"] == {"number": 0, "commit": "0c1e570"} and hit["path"] == str(root)
    assert uptodate.key(recipe, ["cpu"], tmp_path / "builds", ccache=True) != key  # another command line

    lock.write_text('{"changed": 1}\n')  # a changed input: the full check runs
    assert uptodate.check(key) is None
    record()
    _fake_program(cc, "cc 2, a longer version")  # a changed compiler
    assert uptodate.check(key) is None
    record()
    monkeypatch.setenv("CXXFLAGS", "-O0")  # a changed environment
    assert uptodate.check(key) is None
    monkeypatch.delenv("CXXFLAGS")
    assert uptodate.check(key) is not None
    _fake_program(tools / "ccache", "ccache 9")  # a ccache that was not there (the launcher flags change)
    assert uptodate.check(key) is None
    record()
    assert uptodate.check(key) is not None
    (root / "bin" / "llama-server").unlink()  # a published file gone
    assert uptodate.check(key) is None
    (root / "bin" / "llama-server").write_text("binary")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "identity": "id-2"}))  # republished by another build
    assert uptodate.check(key) is None


def test_gpu_builds_are_not_recorded(tmp_path: Path) -> None:
    root = _published(tmp_path, "id-1")
    key = uptodate.key(tmp_path / "r.yaml", None, tmp_path / "builds", ccache=True)
    gpu = {"recipe": "r", "backend": "cuda", "path": str(root), "identity": "id-1"}
    uptodate.record(key, uptodate.inputs({}, ccache=False), [gpu])
    assert uptodate.check(key) is None


@pytest.mark.slow
def test_no_op_build_takes_the_fast_path(llama_build: Path, test_cache: Path, tmp_path: Path) -> None:
    from tests import session_build

    paths = session_build.layout(test_cache)
    env = session_build.env(test_cache)
    build = ["build", paths["recipe"], "--builds-dir", paths["builds"], "--json"]
    first = run_harness(*build, env=env)
    assert first.returncode == 0, first.stderr
    record = paths["cache"] / "uptodate" / f"{uptodate.key(paths['recipe'], None, paths['builds'], ccache=True)}.json"
    assert record.is_file()
    before = record.stat().st_mtime_ns
    again = run_harness(*build, env=env)
    assert again.returncode == 0 and json.loads(again.stdout) == json.loads(first.stdout)
    assert json.loads(again.stdout)[0]["noop"] is True
    assert record.stat().st_mtime_ns == before  # answered from the record, nothing recorded again
    # the same recipe under another name is another input: the full check runs and records it
    copy = tmp_path / "repo"
    shutil.copytree(paths["repo"], copy, symlinks=True)
    other = run_harness("build", copy / "recipes" / "session.yaml", "--builds-dir", paths["builds"], "--json", env=env)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)[0]["noop"] is True
    assert (paths["cache"] / "uptodate" / f"{uptodate.key(copy / 'recipes' / 'session.yaml', None, paths['builds'], ccache=True)}.json").is_file()


def test_a_build_looked_for_from_another_directory_names_where_it_looked(tmp_path: Path) -> None:
    """builds/ is relative to the current directory: the error gives the absolute place and --builds-dir."""
    recipe = write_recipe(tmp_path / "r", "mine", "build: {backends: [cpu]}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_harness("serve", recipe, "--model", BAD_GGUF, "--dry-run", cwd=elsewhere)
    assert res.returncode == 2, res.stderr
    assert f"no llama-server in {elsewhere}/builds/mine/cpu/bin" in res.stderr
    assert "--builds-dir <that directory>/builds" in res.stderr


@pytest.mark.parametrize("verb", ["serve", "bench"])
@pytest.mark.parametrize("bad", ["text_file.gguf", "empty.gguf", "huge_tensor_past_eof.gguf", "lone-00002-of-00002.gguf"])
def test_a_bad_model_is_named_before_llama_server_starts(verb: str, bad: str, tmp_path: Path) -> None:
    """The harness's own GGUF reader checks --model (every shard of a set): exit 2 naming the file,
    not llama-server's log (the published llama-server here is a stand-in that must never run)."""
    recipe = write_recipe(tmp_path / "r", "mine", "build: {backends: [cpu]}\n")
    binary = tmp_path / "builds" / "mine" / "cpu" / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\ntouch \"$0.ran\"\nexit 1\n")
    binary.chmod(0o755)
    extra = ["--dry-run"] if verb == "serve" else ["--spec", "none"]
    res = run_harness(verb, recipe, "--model", DATA / "bad_gguf" / bad, "--builds-dir", tmp_path / "builds", *extra)
    assert res.returncode == 2, res.stderr
    assert str(DATA / "bad_gguf") in res.stderr and "Traceback" not in res.stderr
    assert not binary.with_name("llama-server.ran").exists()


def test_a_reader_that_goes_away_ends_it_quietly() -> None:
    """`harness ... | head -1`: no traceback, no error line, and the exit status git gives (141).
    The pipe's reader is closed before the first write, so the write fails every time."""
    probe = ("import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
             "from harness import cli; code = cli.main(['completion', 'bash']); sys.stderr.write(f'exit {code}')")
    res = subprocess.run([sys.executable, "-u", "-c", probe], capture_output=True, text=True, cwd=REPO)  # unbuffered
    assert res.stderr == "exit 141", res.stderr


@pytest.mark.parametrize("case", [c for c in FAILING if c.startswith("gguf ")])
def test_a_bad_gguf_is_named_in_the_json_error_too(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main([*FAILING[case], "--json"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["file"] == str(BAD_GGUF) and error["exit_code"] == 2, error


def test_every_json_result_says_ok() -> None:
    """A success says ``"ok": true`` (an object, or each object of a list), a failure ``"ok": false``;
    a result that sets ``ok`` itself keeps its own answer."""
    good = REPO / "recipes" / "demo.yaml"
    res = run_harness("validate", good, "--json")
    assert res.returncode == 0, res.stderr
    assert [(r["ok"], r["recipe"]) for r in json.loads(res.stdout)] == [(True, str(good))]
    res = run_harness("completion", "bash", "--json")
    data = json.loads(res.stdout)
    assert res.returncode == 0 and data["ok"] is True and data["shell"] == "bash"
    res = run_harness("gguf", "audit", DATA / "bad_gguf" / "bad_magic.gguf", "--json")
    assert res.returncode == 2 and json.loads(res.stdout)["ok"] is False


@pytest.mark.parametrize("verb", ["prepare", "lock"])
def test_help_describes_the_command_with_an_example(verb: str) -> None:
    res = run_harness(verb, "--help")
    assert res.returncode == 0
    usage, description, *_ = res.stdout.split("\n\n")
    assert usage.startswith(f"usage: harness {verb}") and len(description.split()) > 30
    assert f"example:\n  harness {verb} recipes/demo.yaml" in res.stdout
