"""numba is an optional extra: without it the default paths work and say what to install.

Before: numba (+ llvmlite, ~200 MB of a ~420 MB install) was a hard dependency although the
default profiling path never imports it; the PPK2 decoder defaulted to the numba kernel.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinytelem.errors import ConfigError, SensorError
from tinytelem.power import summaries
from tinytelem.sensors import ppk2_decode
from tinytelem.sensors.ppk2_decode import PPK2Decoder, PPK2Samples, default_backend
from tinytelem.sensors.ppk2_protocol import convert_reference, pack_words

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


class _NoNumba:
    """A meta path finder that makes numba look uninstalled."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name == "numba" or name.startswith("numba."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture
def no_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "numba" or m.startswith("numba.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoNumba(), *sys.meta_path])
    monkeypatch.setattr(ppk2_decode, "_KERNEL", {})
    monkeypatch.setattr(summaries, "_NUMBA_KERNEL", [])


def _words(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    ranges = np.repeat(rng.integers(0, 5, n // 50 + 1), 50)[:n]
    return pack_words(rng.integers(0, 16384, n), ranges, np.arange(n), rng.integers(0, 256, n))


def _decode(backend: str, words: np.ndarray) -> np.ndarray:
    dec = PPK2Decoder(backend=backend)
    events = dec.receive_data(words[:3001].tobytes()) + dec.receive_data(words[3001:].tobytes())
    return np.concatenate([e.current_a for e in events if isinstance(e, PPK2Samples)])


@pytest.mark.usefixtures("no_numba")
def test_ppk2_falls_back_to_numpy() -> None:
    assert default_backend() == "numpy"
    assert PPK2Decoder().backend == "numpy"
    words = _words(8000)
    fallback = _decode("auto", words)
    np.testing.assert_allclose(fallback, _decode("python", words), rtol=1e-6)
    assert fallback.size == words.size
    assert not np.allclose(fallback, convert_reference(words, PPK2Decoder().metadata, 3300))
    with pytest.raises(SensorError, match=r"tinytelem\[numba\]"):
        _decode("numba", words)
    assert "numba" not in sys.modules


@pytest.mark.usefixtures("no_numba")
def test_numba_summaries_name_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"tinytelem\[numba\]"):
        summaries.segment_stats_numba(np.ones(4, np.float32), np.array([0, 2]))


def test_numba_is_an_extra_not_a_dependency() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(d.startswith("numba") for d in meta["dependencies"])
    assert meta["optional-dependencies"]["numba"] == ["numba>=0.59"]
    assert "numba" in meta["optional-dependencies"]["dev"][0]


@pytest.mark.slow
def test_profile_never_imports_numba(tmp_path: Path) -> None:
    code = (
        "import sys, trio\n"
        "from pathlib import Path\n"
        "from tinytelem.session.options import ProfileOptions\n"
        "from tinytelem.session.profile import run_profile\n"
        f"opts = ProfileOptions(device='emu:rp2040', out_dir=Path({str(tmp_path / 'r')!r}),"
        " n_tokens=3)\n"
        "trio.run(run_profile, opts)\n"
        "assert 'numba' not in sys.modules, 'profile imported numba'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
