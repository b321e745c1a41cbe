"""Shared fixtures. The real model lives beside the project in ../shared/models (CI has it)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = ROOT.parent / "shared" / "models"
VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.fixture
def stories260k() -> Path:
    """Path of the stories260K llama2.c checkpoint; skips when ../shared is absent."""
    path = SHARED_MODELS / "stories260K.bin"
    if not path.is_file():
        pytest.skip(f"test model not found at {path} (CI provides ../shared/models; see README)")
    return path


@pytest.fixture
def tok512() -> Path:
    """Path of the stories260K tokenizer; skips when ../shared is absent."""
    path = SHARED_MODELS / "tok512.bin"
    if not path.is_file():
        pytest.skip(f"tokenizer not found at {path} (CI provides ../shared/models; see README)")
    return path
