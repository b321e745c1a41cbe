"""docs/accuracy.md's stories260K tables are `tinytelem model eval` output: re-run and compare."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "accuracy.md"


def _blocks() -> list[str]:
    if not DOC.is_file():
        return []
    text = DOC.read_text(encoding="utf-8")
    return [b for b in re.findall(r"```text\n(.*?)```", text, re.DOTALL)
            if "stories260K.bin" in b and b.startswith("$ tinytelem")]


def test_doc_has_the_four_tables() -> None:
    if not DOC.is_file():
        pytest.skip(f"{DOC} not present (installed package without docs)")
    blocks = _blocks()
    assert len(blocks) == 4
    assert any("--bits 8,4,3,2\n" in b for b in blocks)  # every width the issue asks for


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_accuracy_tables_match_model_eval(index: int, stories260k: Path, tok512: Path,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          ) -> None:
    blocks = _blocks()
    if index >= len(blocks):
        pytest.skip("block missing (checked by test_doc_has_the_four_tables)")
    shutil.copy(stories260k, tmp_path / "stories260K.bin")
    shutil.copy(tok512, tmp_path / "tok512.bin")
    monkeypatch.chdir(tmp_path)
    lines = blocks[index].splitlines()
    commands = [ln[2:] for ln in lines if ln.startswith("$ ")]
    expected = [ln for ln in lines if not ln.startswith("$ ")]
    output = ""
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "tinytelem"
        result = CliRunner().invoke(cli, argv[1:])
        assert result.exit_code == 0, f"{command}: {result.output} {result.exception!r}"
        output = result.output
    got = [ln.rstrip() for ln in output.strip("\n").splitlines()]
    assert [_words(ln) for ln in got] == [_words(ln) for ln in expected]
    for have, want in zip(got, expected, strict=True):
        for a, b in zip(have.split(), want.split(), strict=True):
            if a != b:  # a number on a rounding boundary may print one unit apart
                unit = 10.0 ** -len(b.partition(".")[2].rstrip("%"))
                assert abs(float(a.rstrip("%")) - float(b.rstrip("%"))) <= 1.01 * unit, (a, b)


def _words(line: str) -> list[str]:
    """The line with its numbers masked: every other word must match exactly."""
    return [re.sub(r"^-?[0-9.]+%?$", "#", w) for w in line.split()]
