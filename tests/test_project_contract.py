"""The project's own promises: README quick start and CI agree; --help lists the contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", text, re.DOTALL)
    assert block, "README has a quick start block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    commands = quick_start()
    assert len(commands) == 2
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == commands[1]
    assert "scripts/install.sh" in commands[0] and "scripts/install.sh" in " ".join(ci)


def test_cli_help_lists_the_contract() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway.cli.main", "deidentify", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--input", "--output", "--profile", "--quarantine", "--jobs"):
        assert flag in out
    serve = subprocess.run([sys.executable, "-m", "gateway.cli.main", "serve", "--help"],
                           capture_output=True, text=True, check=True).stdout
    for flag in ("--host", "--port", "--data-dir"):
        assert flag in serve
    token = subprocess.run([sys.executable, "-m", "gateway.cli.main", "token", "create", "--help"],
                           capture_output=True, text=True, check=True).stdout
    assert "--role" in token and "--data-dir" in token


def test_token_roles_offered_by_the_cli_are_the_roles_that_exist() -> None:
    from gateway.cli.serve_cmd import ROLES
    from gateway.persistence.tokens import Role

    assert ROLES == tuple(r.value for r in Role)
