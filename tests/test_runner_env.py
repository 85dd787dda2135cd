"""Children get our environment without its secrets; git's network commands keep what its credential helpers read."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import runner
from harness.source import git

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


def test_the_secret_patterns_are_the_documented_ones() -> None:
    """The README's list of secret patterns is the runner's, and every name it gives is removed."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    bullet = readme.split("**Children get no secrets.**", 1)[1].split(" are removed", 1)[0]
    documented = [p for p in re.findall(r"`([^`]+)`", bullet) if "*" in p]
    assert tuple(documented) == runner.SECRET_PATTERNS
    examples = [n for n in re.findall(r"`([A-Z_]+)`", bullet) if not n.endswith("_")]
    assert examples and all(runner.is_secret(n) for n in examples), examples


@pytest.mark.parametrize("name", ["PGPASSWORD", "MYSQL_PWD", "GH_PAT", "OPENAI_KEY", "HF_TOKEN", "hf_token",
                                  "AWS_SECRET_ACCESS_KEY", "LLAMA_API_KEY", "DB_PASSWD", "GPG_PASSPHRASE",
                                  "GOOGLE_APPLICATION_CREDENTIALS", "ANTHROPIC_APIKEY", "SLACK_TOKEN_FILE"])
def test_secret_names(name: str) -> None:
    assert runner.is_secret(name)


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "PATH", "PWD", "OLDPWD", "HOME", "SSH_AUTH_SOCK",
                                  "GIT_ASKPASS", "CCACHE_DIR", "KEYTIMEOUT"])
def test_not_secret_names(name: str) -> None:
    assert not runner.is_secret(name)


def test_documented_names_reach_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGPASSWORD", "MYSQL_PWD", "GH_PAT", "OPENAI_KEY"):
        monkeypatch.setenv(name, "s3cret")
    ran = _env(runner.run(["env"]).stdout)
    assert "s3cret" not in ran.values()
