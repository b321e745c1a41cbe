"""The examples in README.md and docs/*.md run, as written, in a fresh directory.

Each document's ```console lines starting with ``$ `` are run in order by bash in one temporary
directory per document (so later commands see the files earlier ones wrote), with this
environment's ``tinytelem`` and ``python`` first on PATH (``.venv/bin/`` prefixes are dropped).
``python`` blocks run with the same interpreter. Lines (and python blocks) that need what a
test cannot have are left out: the set-up scripts (tested by CI itself), hardware ports
(``/dev/tty``, ``COM``), placeholders (``<...>``), and ESP-IDF (``idf.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SKIP = re.compile(r"^(bash scripts/|sudo |apt|pip |idf\.py|cd |npm )|/dev/tty|COM\d|<[a-zA-Z]")
BLOCK = re.compile(r"```(console|python)\n(.*?)```", re.DOTALL)


def examples(doc: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for kind, body in BLOCK.findall(doc.read_text(encoding="utf-8")):
        if kind == "python":
            if not SKIP.search(body):
                out.append(("python", body))
            continue
        for line in body.splitlines():
            if not line.startswith("$ "):
                continue
            command = line[2:].split("  #")[0].strip().replace(".venv/bin/", "")
            if not command or SKIP.search(command):
                continue
            if out and out[-1][0] == "console" and out[-1][1].endswith("&"):
                # A server started in the background serves the commands after it: one script,
                # which waits for the server before it ends.
                out[-1] = ("console", f"{out[-1][1]}\n{command}")
            else:
                out.append(("console", command))
    return [(kind, f"{text}\nwait" if kind == "console" and "&\n" in text else text)
            for kind, text in out]


@pytest.mark.parametrize("doc", [d for d in DOCS if examples(d)], ids=lambda d: d.name)
def test_examples_run(doc: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    main = "from tinytelem.cli.main import main; main()"
    (bindir / "tinytelem").write_text(f"#!/bin/sh\nexec {sys.executable} -c '{main}' \"$@\"\n")
    (bindir / "tinytelem").chmod(0o755)
    (bindir / "python").symlink_to(sys.executable)
    # Debian installs daemons (mosquitto, for docs/lab.md) in sbin, often not on a user's PATH.
    path = os.pathsep.join([str(bindir), os.environ["PATH"], "/usr/local/sbin", "/usr/sbin"])
    env = {**os.environ, "PATH": path,
           "TINYTELEM_DOCS_TEST": "1"}
    for kind, text in examples(doc):
        if kind == "python":
            argv = [sys.executable, "-c", text]
        else:
            argv = ["bash", "-euo", "pipefail", "-c", text]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, (
            f"{doc.name}: example failed ({proc.returncode}):\n{text}\n--- stdout\n"
            f"{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-2000:]}"
        )
