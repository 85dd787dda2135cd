"""Smaller reports of issue 23 (item 7), each reproduced with real tools and kept as a test.

Each test's docstring names the report it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness import smoke
from harness.backends import cuda
from harness.build import needs
from harness.errors import InputError
from harness.gguf_files.audit import audit_path
from harness.nightly import report as nightly_report
from harness.nightly import run as nightly
from harness.pipeline import checkpoint, tools
from harness.recipe.load import load_recipe
from harness.serve import buffer_types, server_help
from harness.smoke import tiny_model
from tests import mtp_models
from tests.conftest import REPO, run_harness, write_recipe
from tests.test_serve import served_recipe

# --- did-you-mean -----------------------------------------------------------------------------

# common/arg.cpp at 0c1e570: --draft-max is kept only to say it was removed, and what replaced it
HELP = """----- speculative params -----

--spec-draft-n-max N                    number of tokens to draft for speculative decoding (default: 16)
--spec-ngram-mod-n-max N                maximum number of tokens to draft with ngram-mod (default: 64)
--draft, --draft-n, --draft-max N       the argument has been removed. use --spec-draft-n-max or
                                        --spec-ngram-mod-n-max
                                        (env: LLAMA_ARG_DRAFT_MAX)
"""


def test_did_you_mean_never_proposes_a_removed_flag() -> None:
    """Report: `--draft-n-max` got "did you mean '--draft-max'?", and --draft-max is refused next as removed."""
    problems = server_help.parse(HELP).problems(["--draft-n-max", "4"])
    assert problems == ["unknown flag '--draft-n-max' (did you mean '--spec-draft-n-max' or '--spec-ngram-mod-n-max'? "
                        "--draft-max has been removed)"]  # fmt: skip


@pytest.mark.slow
def test_did_you_mean_against_the_real_llama_server(llama_bin: Path) -> None:
    """Report: `--draft-n-max` on the real llama-server suggested the removed --draft-max."""
    problems = server_help.read(llama_bin / "llama-server").problems(["--draft-n-max", "4"])
    assert len(problems) == 1 and "'--spec-draft-n-max'" in problems[0] and "did you mean '--draft-max'" not in problems[0]


# --- a safetensors index naming a missing shard -------------------------------------------


def _sharded(directory: Path) -> Path:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1}))
    weight_map = {}
    for k, names in enumerate((["model.embed_tokens.weight"], ["model.norm.weight", "lm_head.weight"]), start=1):
        shard = f"model-0000{k}-of-00002.safetensors"
        save_file({n: np.ones((4, 4), dtype=np.float32) for n in names}, str(directory / shard))
        weight_map.update(dict.fromkeys(names, shard))
    (directory / checkpoint.INDEX).write_text(json.dumps({"metadata": {"total_size": 48 * 4}, "weight_map": weight_map}))
    return directory


def test_an_index_naming_a_missing_shard_is_refused_before_converting(tmp_path: Path) -> None:
    """Report: a checkpoint whose model.safetensors.index.json names a shard that is not there passed the
    preflight and ended in convert_hf_to_gguf.py's traceback."""
    ckpt = _sharded(tmp_path / "ckpt")
    assert checkpoint.read(ckpt).tensors == 3
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError) as exc:
        checkpoint.read(ckpt)
    assert "names model-00002-of-00002.safetensors, which is not in the directory (2 tensor(s)" in exc.value.message
    assert exc.value.exit_code == 2


# --- legacy imatrix named .dat --------------------------------------------------------------

OLD_IMATRIX_HELP = """----- example-specific params -----

-o,    --output FNAME                   output file (default: 'imatrix.dat')
--output-frequency N                    output the imatrix every N iterations (default: 10)
"""


def test_a_build_that_writes_legacy_imatrices_gets_a_dat_name() -> None:
    """Report: the legacy-format imatrix (an older pin's llama-imatrix, which has no --output-format) was saved
    as <name>.imatrix.gguf while the README says <name>.imatrix.dat."""
    assert tools.imatrix_format_from_help(OLD_IMATRIX_HELP) == "dat"
    assert tools.imatrix_format_from_help(
        "--output-format {gguf,dat}                output format for imatrix file (default: gguf)\n") == "gguf"


@pytest.mark.slow
def test_the_session_builds_imatrix_writes_gguf(llama_bin: Path, tmp_path: Path) -> None:
    """Report (legacy imatrix named .gguf): the format is the one the build's own llama-imatrix states."""
    build = tools.Build(llama_bin.parent, "cpu", None, "python3")
    assert tools.imatrix_format(build) == "gguf"


# --- nightly report: a failed smoke check is not a failed build -----------------------------


def test_a_failed_smoke_check_is_reported_as_one() -> None:
    """Report: the nightly report said "build cpu: FAILED (log: None)" when the build was fine and only the decode
    smoke check failed."""
    exc = smoke.SmokeFailure("decode", "Q4_0 decoded garbage", details={"type": "Q4_0"})
    entry = {"recipe": "r", "status": "failed", "failed_step": "smoke:decode:cpu", "adopted": False, "items": [],
             "builds": {"cpu": nightly.failed_build("smoke:decode:cpu", exc).model_dump()}, "smoke": {}, "error": str(exc)}  # fmt: skip
    md = nightly_report.markdown({"date": "d", "recipes": [entry]})
    assert "- build cpu: built; smoke check decode FAILED" in md and "log: None" not in md
    built = nightly.failed_build("build:cpu", InputError("x")).model_dump(exclude_unset=True)
    assert nightly_report.markdown({"date": "d", "recipes": [{**entry, "builds": {"cpu": built}}]}).count(
        "- build cpu: FAILED\n") == 1


# --- gemma4-assistant: embedding_length_out carries the target's hidden size ----------------


def test_an_assistant_without_the_targets_width_is_not_a_draft(tmp_path: Path) -> None:
    """Report: a gemma4-assistant whose embedding_length_out equals its own embedding_length audited as a draft,
    then llama-server refused it ('Gemma 4 assistant requires embedding_length_out to carry the target hidden size')."""
    good = audit_path(mtp_models.write_gemma4_assistant(tmp_path / "good.gguf"))
    assert good.status == "draft", good.problems
    bad = audit_path(mtp_models.write_gemma4_assistant(tmp_path / "bad.gguf", target_width=64))  # its own width
    assert bad.status != "draft"
    assert any("embedding_length_out is 64, its own embedding_length" in p for p in bad.problems)


# --- doctor RECIPE: CUDA archs the local nvcc cannot target ---------------------------------


@pytest.mark.skipif(cuda.nvcc_path() is None, reason="needs an nvcc (the CUDA toolkit)")
def test_doctor_refuses_cuda_archs_the_local_nvcc_cannot_target(tmp_path: Path) -> None:
    """Report: `doctor RECIPE` said ready for build.cuda.archs [61, 90] with nvcc 13, which starts at sm_75."""
    supported = cuda.nvcc_archs()
    assert supported is not None and "90" in supported
    old = next(a for a in ("52", "61", "70") if a not in supported)  # what this nvcc dropped
    recipe = write_recipe(tmp_path, "gpu", f"name: gpu\nbuild: {{backends: [cuda], cuda: {{archs: [{old}, 90a]}}}}\n")
    found = {c.what: c for c in needs.check(load_recipe(recipe))}
    assert found["cuda: archs"].ok is False and found["cuda: archs"].detail.startswith(f"{old} (build.cuda.archs): nvcc")
    res = run_harness("doctor", recipe)
    assert res.returncode == 1 and "cannot target" in res.stdout + res.stderr
    recipe.write_text("name: gpu\nbuild: {backends: [cuda], cuda: {archs: [90, 120]}}\n")
    assert {c.what: c for c in needs.check(load_recipe(recipe))}["cuda: archs"].ok


# --- quantize checks a local draft before doing the work ------------------------------------


@pytest.mark.slow
def test_quantize_with_a_missing_local_draft_stops_before_any_work(tmp_path: Path, llama_bin: Path) -> None:
    """Report: `harness quantize` with a recipe whose local draft: file does not exist quantized everything and
    only then exited 2."""
    model = tiny_model.write(tmp_path / "tiny.gguf")
    recipe = write_recipe(tmp_path / "repo", "mini", f"name: mini\nbuild: {{backends: [cpu]}}\n"
                          f"model: {{source: {model}, quantize: {{types: [Q8_0]}}}}\ndraft: {{source: ./gone.gguf}}\n")  # fmt: skip
    builds = tmp_path / "builds"
    (builds / "mini" / "cpu").mkdir(parents=True)
    (builds / "mini" / "cpu" / "bin").symlink_to(llama_bin.resolve())
    out = tmp_path / "out"
    res = run_harness("quantize", recipe, "--builds-dir", builds, "--out", out, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "draft.source ./gone.gguf: no such file" in res.stderr
    assert not list(out.glob("*.gguf")), sorted(p.name for p in out.iterdir())


# --- -ot naming a buffer type the build does not have ---------------------------------------


def test_override_buffer_types_are_checked_against_what_the_build_offers() -> None:
    """Report: `-ot exps=CUDA0` on a CPU build passed the dry run (llama-server then exits 'unknown buffer type')."""
    assert buffer_types.problems(["-ot", "exps=CPU,mtp=CUDA0", "-t", "2"], ["CPU"]) == [
        "-ot mtp=CUDA0: this build has no buffer type 'CUDA0' here (it has CPU)"]
    assert buffer_types.problems(["-ot", "exps=CPU"], ["CPU"]) == []


@pytest.mark.slow
def test_a_cuda_override_on_a_cpu_build_fails_the_dry_run(tmp_path: Path, llama_bin: Path) -> None:
    """Report: `-ot ...=CUDA0` on a CPU build passed `serve --dry-run`."""
    assert "CPU" in buffer_types.available(llama_bin / "llama-server")
    recipe, builds = served_recipe(tmp_path, llama_bin, serve=r"{tensor_overrides: ['mtp\..*=CUDA0']}")
    model = tiny_model.write(tmp_path / "model.gguf")
    res = run_harness("serve", recipe, "--model", model, "--builds-dir", builds, "--dry-run", timeout=120)
    assert res.returncode == 2, res.stderr
    assert "no buffer type 'CUDA0'" in res.stderr and "Traceback" not in res.stderr
    recipe.write_text(recipe.read_text().replace("CUDA0", "CPU"))
    assert run_harness("serve", recipe, "--model", model, "--builds-dir", builds, "--dry-run", timeout=120).returncode == 0


# --- the nightly workflow's pull request branches -------------------------------------------


def test_every_nightly_job_pushes_its_own_branch() -> None:
    """Report: both qwen36 nightly jobs (cpu and cuda) pushed the same PR branch, the second push failing."""
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly.yml").read_text())
    job = wf["jobs"]["nightly"]
    matrix = job["strategy"]["matrix"]
    jobs = [{"recipe": r, "backend": b} for r in matrix["recipe"] for b in matrix["backend"]] + matrix.get("include", [])
    step = next(s["run"] for s in job["steps"] if s.get("name") == "Propose the new lock")
    line = next(x.strip() for x in step.splitlines() if x.strip().startswith("branch="))
    names = []
    for j in jobs:
        expanded = line.replace("${{ matrix.recipe }}", j["recipe"]).replace("${{ matrix.backend }}", j["backend"])
        names.append(expanded.replace("$(basename " + j["recipe"] + " .yaml)", Path(j["recipe"]).stem))
    assert len(jobs) == 4 and len(set(names)) == len(names), names


# --- a -p0 diff is a path problem ----------------------------------------------------------


def test_a_p0_diff_is_named_as_a_path_problem(tmp_path: Path) -> None:
    """Report: a diff made with `diff -u` from the tree's root (-p0: `--- src/llama.cpp`) was reported as a
    conflict; git apply (-p1) looks for `llama.cpp` and says it does not exist."""
    import subprocess

    from harness.source import patch_parts as patchset

    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "llama.cpp").write_text("a\nb\nc\n")
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    diff = b"--- src/llama.cpp\n+++ src/llama.cpp\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
    git = subprocess.run(["git", "-C", str(tree), "apply", "--check", "-"], input=diff, capture_output=True)
    assert git.returncode != 0 and b"llama.cpp: No such file or directory" in git.stderr  # the real tool's view
    assert patchset.p0_paths(diff, lambda p: (tree / p).exists()) == ["src/llama.cpp"]
    p1 = diff.replace(b"--- src/", b"--- a/src/").replace(b"+++ src/", b"+++ b/src/")
    assert subprocess.run(["git", "-C", str(tree), "apply", "--check", "-"], input=p1).returncode == 0
    assert patchset.p0_paths(p1, lambda p: (tree / p).exists()) == []
