"""Bad model files through the real CLI in a subprocess: one typed error line, exit 1.

For each damaged file (see _badfiles.CASES: truncated, wrong magic, bad CRC, absurd shapes,
unsupported quant types, header/tensor disagreement, for .bin, .tlm and .gguf) both ``model
inspect`` and ``model validate`` must exit non-zero with a single ``error:`` line on stderr
that names the problem (and the file offset where the format lets us know it), and no
traceback. llama2.c .bin and GGUF carry no checksum, so "bad CRC" exists for .tlm only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.helpers import CASES

CLI = [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "model"]


@pytest.mark.slow
def test_every_bad_file_gives_one_typed_error_line(tmp_path: Path) -> None:
    runs = []
    for name, build in CASES.items():
        where = tmp_path / name
        where.mkdir()
        path, words = build(where)
        for verb in ("inspect", "validate"):
            proc = subprocess.Popen([*CLI, verb, str(path)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            runs.append((name, verb, words, proc))
    failures = []
    for name, verb, words, proc in runs:
        out, err = proc.communicate(timeout=120)
        lines = err.strip().splitlines()
        problems = []
        if proc.returncode != 1:
            problems.append(f"exit {proc.returncode}")
        if "Traceback" in err:
            problems.append("traceback")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"stderr is not one error line: {err[-400:]!r}")
        missing = [w for w in words if w not in err]
        if missing:
            problems.append(f"missing {missing} in {err.strip()!r}")
        if "verdict" in out:
            problems.append("printed a verdict for a broken file")
        if problems:
            failures.append(f"{name} {verb}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


def test_tlm_header_disagreeing_with_tensors_is_refused(tmp_path: Path) -> None:
    """In-process twin of the CLI case: the reader names the tensor, shape and offset."""
    from tinytelem.errors import ModelError
    from tinytelem.models.tlm import read_tlm

    path, words = CASES["tlm-config-mismatch"](tmp_path)
    with pytest.raises(ModelError) as info:
        read_tlm(path)
    assert all(w in str(info.value) for w in words)
    assert "layers.0.w1" in str(info.value)
