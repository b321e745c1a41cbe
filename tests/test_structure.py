"""The layout rules of docs/architecture.md, checked from the code itself.

Imports are read from the source text (``ast``), so the check costs no imports of heavy modules
and sees lazy imports inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections import defaultdict
from pathlib import Path

import tinytelem
from tinytelem.errors import TinyTelemError

SRC = Path(tinytelem.__file__).resolve().parent

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "units"}),
    frozenset({"protocol"}),
    frozenset({"records", "transports", "trace", "platforms"}),
    frozenset({"models", "power"}),
    frozenset({"sensors"}),
    frozenset({"actors", "firmware"}),
    frozenset({"costing"}),
    frozenset({"emulator", "analysis", "devices", "replay"}),
    frozenset({"report"}),
    frozenset({"live"}),
    frozenset({"session"}),
    frozenset({"client"}),
    frozenset({"cli"}),
)
"""Bottom to top, as docs/architecture.md draws them: a package imports only lower layers."""

KNOWN_CIRCLES: frozenset[frozenset[str]] = frozenset()
"""Circles waiting for a reshape. The test fails as soon as one of them is gone, so this list
cannot go stale."""


def _unit(path: Path) -> str:
    """The top-level package (or module) of ``src/tinytelem`` that ``path`` belongs to."""
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found.update(n.split(".")[1] for n in names if n.startswith("tinytelem."))
    return found


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        unit = _unit(path)
        edges[unit].update(i for i in _imports(path) if i != unit)
    return edges


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit!r} is in no layer: add it to LAYERS and docs/architecture.md")


def test_every_package_has_a_layer() -> None:
    for unit in _graph():
        if unit != "__init__":
            _layer(unit)


def test_no_import_climbs_a_layer() -> None:
    bad = []
    for unit, targets in _graph().items():
        if unit == "__init__":
            continue
        for target in targets:
            if _layer(target) >= _layer(unit) and frozenset({unit, target}) not in KNOWN_CIRCLES:
                bad.append(f"{unit} -> {target}")
    assert bad == [], "imports that climb (or stay on) a layer: " + ", ".join(sorted(bad))


def test_known_circles_still_exist() -> None:
    edges = _graph()
    for circle in KNOWN_CIRCLES:
        a, b = sorted(circle)
        assert b in edges[a] and a in edges[b], f"{a} <-> {b} is gone: drop it from KNOWN_CIRCLES"


def test_error_tree_drawing_names_every_error() -> None:
    for info in pkgutil.walk_packages([str(SRC)], "tinytelem."):
        importlib.import_module(info.name)
    pending: list[type[BaseException]] = [TinyTelemError]
    seen: set[str] = set()
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("tinytelem."):
            seen.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    doc = importlib.import_module("tinytelem.errors").__doc__ or ""
    drawn = set(re.findall(r"^ {4}(?:[│ ]*[├└]── )?(\w+)\b", doc, re.MULTILINE))
    missing = sorted(seen - drawn)
    assert missing == [], f"errors.py's drawing lacks {missing}"


def _is_reexport_only(node: ast.stmt) -> bool:
    """An import, the docstring, ``__all__``, or the package's ``__version__`` string."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return True
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    names = {t.id for t in targets if isinstance(t, ast.Name)}
    if names == {"__all__"} and len(targets) == 1:
        return True
    value = getattr(node, "value", None)
    return names == {"__version__"} and isinstance(value, ast.Constant)


def test_package_inits_only_reexport() -> None:
    bad = []
    for path in sorted(SRC.rglob("__init__.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad += [f"{path.relative_to(SRC)}:{node.lineno}" for node in tree.body
                if not _is_reexport_only(node)]
    assert bad == [], "logic in __init__.py (move it to a module and re-export): " + ", ".join(bad)


TESTS = Path(__file__).resolve().parent

TEST_FOLDERS_WITHOUT_PACKAGE: frozenset[str] = frozenset({"e2e", "vectors"})
"""End-to-end runs across packages, and the golden vectors' generator."""

BEHAVIOUR_FILES: frozenset[str] = frozenset({
    "live/test_churn.py", "live/test_fanout.py", "live/test_node.py", "live/test_robust.py",
    "live/test_wait.py", "protocol/test_vectors.py", "report/test_report_outputs.py",
    "sensors/test_without_numba.py",
    # the C firmware in firmware/ (engine, telemetry, ports), which has no Python module
    "firmware/test_engine.py", "firmware/test_port_esp.py", "firmware/test_port_linux.py",
    "firmware/test_telemetry.py", "firmware/test_txring.py", "firmware/test_boards.py",
    # crash safety, device strings, disk full, round trips, self-description, the runs table:
    # the writer, reader and raw capture together
    "trace/test_crash.py", "trace/test_device_strings.py", "trace/test_disk_full.py",
    "trace/test_roundtrip.py", "trace/test_self_describing.py", "trace/test_runs_table.py",
})
"""Test files named after a behaviour that crosses the package's modules, not after one."""

NOT_YET_MIRRORED: frozenset[str] = frozenset()
"""Files waiting for a rename. The test fails as soon as one is gone, so this cannot go stale."""


def _test_folders() -> list[Path]:
    return sorted(p for p in TESTS.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file())


def test_every_test_folder_is_a_package() -> None:
    bad = [p.name for p in _test_folders()
           if p.name not in TEST_FOLDERS_WITHOUT_PACKAGE and not (SRC / p.name).is_dir()]
    assert bad == [], f"tests/ folders with no package of that name in src/tinytelem: {bad}"


def _mirrors(package: Path, name: str) -> bool:
    """``test_<name>.py`` names a module, an aspect of one (``<module>_<aspect>``) or docs."""
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {"docs"}
    return any(name == m or name.startswith(m + "_") for m in modules)


def test_every_test_file_names_a_module() -> None:
    bad = []
    for folder in _test_folders():
        if folder.name in TEST_FOLDERS_WITHOUT_PACKAGE:
            continue
        for path in sorted(folder.glob("test_*.py")):
            rel = f"{folder.name}/{path.name}"
            if rel in BEHAVIOUR_FILES or rel in NOT_YET_MIRRORED:
                continue
            if not _mirrors(SRC / folder.name, path.stem.removeprefix("test_")):
                bad.append(rel)
    assert bad == [], f"test files named after no module of their package: {bad}"


def test_not_yet_mirrored_files_still_exist() -> None:
    gone = sorted(rel for rel in NOT_YET_MIRRORED | BEHAVIOUR_FILES
                  if not (TESTS / rel).is_file())
    assert gone == [], f"{gone} are gone: drop them from the lists in test_structure.py"


def test_nursery_modules_are_the_ones_the_architecture_names() -> None:
    doc = (TESTS.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = doc.split("<!-- nurseries -->")[1].split("<!-- /nurseries -->")[0]
    named = set(re.findall(r"`([\w/]+\.py)`", block))
    found = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if "open_nursery" in p.read_text(encoding="utf-8")}
    assert found == named, (f"open nurseries but not in docs/architecture.md: {found - named}; "
                            f"named there but open none: {named - found}")


def test_error_tree_drawing_names_where_each_subclass_lives() -> None:
    for info in pkgutil.walk_packages([str(SRC)], "tinytelem."):
        importlib.import_module(info.name)
    doc = importlib.import_module("tinytelem.errors").__doc__ or ""
    entries = re.split(r"\n(?=    [│ ]*[├└]── )", doc)
    pending: list[type[BaseException]] = [TinyTelemError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__module__.startswith("tinytelem.") or cls.__module__ == "tinytelem.errors":
            continue
        where = cls.__module__.removeprefix("tinytelem.").replace(".", "/") + ".py"
        entry = next((e for e in entries if re.search(rf"── {cls.__name__}\b", e)), "")
        assert where in entry, f"errors.py's drawing should say {cls.__name__} lives in {where}"
