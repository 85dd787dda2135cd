"""Children get our environment without its secrets; git's network commands keep what its credential helpers read."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import git, runner

SECRETS = {"HF_TOKEN": "hf_x", "GITHUB_TOKEN": "ghp_x", "GH_TOKEN": "gh_x", "AWS_SECRET_ACCESS_KEY": "aws_x",
           "LLAMA_API_KEY": "k", "OPENAI_API_KEY": "o", "MY_SERVICE_PASSWORD": "p"}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a secret: TOKEN is not a word of it


def _env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _secrets_seen(env: dict[str, str]) -> set[str]:
    return {k for k in SECRETS if env.get(k)}


def test_tools_get_no_secrets(secret_env: None, tmp_path: Path) -> None:
    ran = _env(runner.run(["env"]).stdout)
    assert not _secrets_seen(ran) and {"PATH", "TOKENIZERS_PARALLELISM"} <= set(ran)
    log = tmp_path / "log"
    runner.stream(["env"], log_path=log, env={"PATH": "/usr/bin:/bin", "HF_TOKEN": "hf_x"})
    assert not _secrets_seen(_env(log.read_text()))


def test_git_gets_its_credentials_only_to_talk_to_remotes(secret_env: None) -> None:
    show = ["-c", "alias.showenv=!env", "showenv"]  # git's own environment, as its helpers would see it
    local = _env(git.git(show).stdout)
    network = _env(git.git(show, network=True).stdout)
    assert not _secrets_seen(local)
    assert _secrets_seen(network) == {"GITHUB_TOKEN", "GH_TOKEN"}
