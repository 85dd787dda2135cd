"""Children get our environment without its secrets; git keeps what its credential helpers read."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import runner

SECRETS = {"HF_TOKEN": "hf_x", "GITHUB_TOKEN": "ghp_x", "GH_TOKEN": "gh_x", "AWS_SECRET_ACCESS_KEY": "aws_x",
           "LLAMA_API_KEY": "k", "OPENAI_API_KEY": "o", "MY_SERVICE_PASSWORD": "p"}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a secret: TOKEN is not a word of it


def _names(text: str) -> set[str]:
    return {line.split("=", 1)[0] for line in text.splitlines() if "=" in line}


def test_tools_get_no_secrets(secret_env: None, tmp_path: Path) -> None:
    ran = _names(runner.run(["env"]).stdout)
    assert not ran & set(SECRETS) and {"PATH", "TOKENIZERS_PARALLELISM"} <= ran
    log = tmp_path / "log"
    runner.stream(["env"], log_path=log, env={"PATH": "/usr/bin:/bin", "HF_TOKEN": "hf_x"})
    assert "HF_TOKEN" not in _names(log.read_text())


def test_git_keeps_its_credential_variables_only(secret_env: None) -> None:
    seen = _names(runner.run(["git", "-c", "alias.showenv=!env", "showenv"]).stdout)  # git's own environment
    assert {"GITHUB_TOKEN", "GH_TOKEN"} <= seen
    assert not seen & {"HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "LLAMA_API_KEY", "OPENAI_API_KEY"}
