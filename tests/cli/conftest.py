"""Fixtures of the CLI tests: terminal width, and tools missing the way a user meets them."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich tables at full width, so cells are not wrapped or cut in the captured output."""
    monkeypatch.setenv("COLUMNS", "220")


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH with nothing on it: every ``shutil.which`` lookup fails for real."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
