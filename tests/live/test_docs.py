"""The Python client example in docs/streaming.md runs and sees the whole run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "streaming.md"


@pytest.mark.slow
def test_python_client_example_runs(tmp_path: Path) -> None:
    text = DOC.read_text()
    section = text[text.index("## Python client"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    found = re.match(r"tokens: (\d+) bye: recording finished", last)
    assert found is not None, done.stdout
    assert int(found.group(1)) > 32  # the prompt tokens and all 32 generated ones
    assert "power [mW]" in done.stdout
