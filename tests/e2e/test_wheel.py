"""The built wheel carries the firmware sources, and an installed tinytelem builds from them;
it carries the engine calibration too, so its twin costs runs as a checkout's does.

Before: the wheel held only the Python package, so from a wheel install ``native:``, ``qemu:``
and ``firmware build`` failed while ``doctor`` listed those targets as buildable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUILD_OUTPUTS = shutil.ignore_patterns("*.o", "*.elf", "*.a", "*.map", "build", "__pycache__",
                                       "*.egg-info", "*.pyc")


def _firmware_sources() -> set[str]:
    return {p.relative_to(ROOT / "firmware").as_posix()
            for p in (ROOT / "firmware").rglob("*")
            if p.is_file() and not BUILD_OUTPUTS(str(p.parent), [p.name])
            and "build" not in p.relative_to(ROOT / "firmware").parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the project (the checkout is left untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    proj = tmp / "proj"
    proj.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, proj / name)
    for name in ("src", "firmware", "calibration"):
        shutil.copytree(ROOT / name, proj / name, ignore=BUILD_OUTPUTS)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp / "dist"), str(proj)],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 and "satisfies the requirement setuptools" in proc.stderr:
        pytest.skip("pip cannot fetch the build backend (setuptools) from its index here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = (tmp / "dist").glob("tinytelem-*.whl")
    return built


@pytest.fixture(scope="module")
def sdist(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist made by the build backend's own hook (PEP 517 ``build_sdist``) in a fresh venv
    with the setuptools pyproject.toml asks for (the ``build`` front end is not a dependency)."""
    tmp = tmp_path_factory.mktemp("sdist")
    proj = wheel.parent.parent / "proj"
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "setuptools>=77"],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot install the build backend here: {proc.stderr.strip()[-300:]}")
    out = tmp / "dist"
    out.mkdir()
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    proc = subprocess.run([str(py), "-c", code], cwd=proj, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


def test_sdist_holds_the_firmware_and_builds_a_wheel_with_it(sdist: Path,
                                                              tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    root = names[0].split("/")[0]
    shipped = {n.removeprefix(f"{root}/firmware/") for n in names
               if n.startswith(f"{root}/firmware/")}
    assert _firmware_sources() <= shipped, sorted(_firmware_sources() - shipped)
    assert f"{root}/setup.py" in names
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path), str(sdist)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = tmp_path.glob("tinytelem-*.whl")
    assert "tinytelem/_firmware/Makefile" in zipfile.ZipFile(built).namelist()


def test_wheel_holds_the_firmware_sources(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("tinytelem/_firmware/") for n in names
               if n.startswith("tinytelem/_firmware/")}
    expected = _firmware_sources()
    assert "Makefile" in expected and "core/main.c" in expected
    assert expected <= shipped, sorted(expected - shipped)
    assert not any(n.endswith((".o", ".elf")) for n in shipped)
    boards = {n for n in names if n.startswith("tinytelem/firmware/board_data/")}
    assert "tinytelem/firmware/board_data/nucleo-f446re.toml" in boards  # firmware flash's data


def _install(wheel: Path, site: Path) -> Path:
    """``wheel`` installed into the folder ``site`` (no dependencies: this interpreter's)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                           "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return site


def test_installed_wheel_builds_native_firmware(wheel: Path, tmp_path: Path) -> None:
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("the native target needs cc and make")
    site = _install(wheel, tmp_path / "site")
    # -S: no site module, so the checkout's editable install (.pth) is not seen; the
    # dependencies come from this interpreter's site-packages, after the installed wheel.
    code = f"""
import json, sys
sys.path[:0] = [{str(site)!r}, {sysconfig.get_paths()["purelib"]!r}]
import tinytelem
assert tinytelem.__file__.startswith({str(site)!r}), tinytelem.__file__
from tinytelem.firmware.build import build, default_build_dir
from tinytelem.firmware.targets import firmware_dir
from tinytelem.cli.doctor import collect
result = build("native")
report = collect()
print(json.dumps({{"src": str(firmware_dir()), "exe": str(result.elf),
                  "build_dir": str(default_build_dir("native")),
                  "sources": report["firmware_sources"],
                  "native": [t for t in report["targets"] if t["target"] == "native"][0]}}))
"""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["src"] == str(site / "tinytelem" / "_firmware")
    assert out["build_dir"].startswith(str(tmp_path / "cache" / "tinytelem" / "firmware"))
    exe = Path(out["exe"])
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert exe.is_relative_to(tmp_path / "cache")  # nothing written into the installed package
    assert out["sources"] == {"path": out["src"], "problem": None}
    assert out["native"]["build"] is True


def test_installed_wheel_carries_the_calibration_the_twin_needs(wheel: Path,
                                                                tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("engine.json", "fidelity.json", "published.toml"):
        assert f"tinytelem/_calibration/{name}" in names
    site = _install(wheel, tmp_path / "site")
    code = f"""
import json, sys
sys.path[:0] = [{str(site)!r}, {sysconfig.get_paths()["purelib"]!r}]
from tinytelem.analysis.prediction import fidelity_band
from tinytelem.costing.calibration import calibration_path
from tinytelem.costing.fidelity import load_points
from tinytelem.costing.model import CostModel
from tinytelem.models.llama2c import STORIES260K_SHAPE
from tinytelem.platforms import get_platform
cm = CostModel(get_platform("esp32s3"), STORIES260K_SHAPE, 4)
print(json.dumps({{"path": str(calibration_path()), "band": fidelity_band(),
                  "points": len(load_points()), "token_s": cm.token_seconds(3)}}))
"""
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["path"] == str(site / "tinytelem" / "_calibration" / "engine.json")
    assert out["band"] and out["band"]["low"] < 1 < out["band"]["high"]
    assert out["points"] >= 4 and out["token_s"] > 0


def test_doctor_says_when_the_sources_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinytelem.cli import doctor
    from tinytelem.errors import ConfigError
    from tinytelem.firmware import targets

    def missing() -> Path:
        raise ConfigError("the firmware sources were not found: test")

    monkeypatch.setattr(targets, "firmware_dir", missing)
    report = doctor.collect()
    assert report["firmware_sources"] == {"path": None,
                                          "problem": "the firmware sources were not found: test"}
    assert all(not t["build"] and "firmware sources" in t["missing"] for t in report["targets"])
    assert not any(t["run"] for t in report["targets"])
