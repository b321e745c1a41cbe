"""docs/model-formats.md and docs/accuracy.md: their console examples run from the repo root."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("page", ["model-formats.md", "accuracy.md"])
def test_console_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = DOCS / page
    if not doc.is_file():
        pytest.skip(f"{doc} not present (installed package without docs)")
    blocks = re.findall(r"```console\n(.*?)```", doc.read_text(encoding="utf-8"), re.DOTALL)
    commands = [ln[2:] for b in blocks for ln in b.splitlines() if ln.startswith("$ ")]
    assert len(commands) >= 3
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "tinytelem"
        result = CliRunner().invoke(cli, argv[1:])
        assert result.exit_code == 0, f"{command}: {result.output} {result.exception!r}"
