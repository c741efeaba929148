"""The package's structure, checked so that it stays: imports point one way (down the layers),
and only ``clock`` reads time or sleeps (issue: the store, "checks that keep the layers honest")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "linger_sched"

# a module may import only modules of a lower layer (imports under TYPE_CHECKING are types only)
LAYERS = {
    "errors": 0, "clock": 1, "specs": 2, "registry": 3, "configfile": 4, "store": 4, "config": 5, "scheduler": 5,
    "worker": 5, "node": 6, "app": 7, "__init__": 8, "cli": 9,
}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def top_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else path.stem


def imports_of(path: Path) -> set[str]:
    """The package modules ``path`` imports at run time, by their top-level name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for n in ast.walk(node))
    inside_store = path.parent.name == "store"
    out = set()
    for node in ast.walk(tree):
        if id(node) in type_only or not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        if inside_store and node.level == 1:
            continue  # the store package's own modules
        if node.module:
            out.add(node.module.split(".")[0])
        else:
            out.update(alias.name for alias in node.names)
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path: Path) -> None:
    me = top_name(path)
    bad = sorted(m for m in imports_of(path) if m in LAYERS and m != me and LAYERS[m] >= LAYERS[me])
    assert not bad, f"{path.name} ({me}, layer {LAYERS[me]}) imports {bad} of the same or a higher layer"


CLOCK_READS = {
    ("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "sleep"),
    ("time", "time_ns"), ("time", "monotonic_ns"), ("datetime", "now"), ("datetime", "utcnow"),
    ("date", "today"),
}


@pytest.mark.parametrize("path", [p for p in modules() if p.name != "clock.py"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_clock_reads_time(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in CLOCK_READS:
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for alias in node.names:
                if (node.module, alias.name) in CLOCK_READS or alias.name in ("sleep", "monotonic", "time"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
    assert not found, f"{path.name} reads time outside clock.py: {found}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The checks find what they look for (a guard against a scan that silently sees nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom ..app import Linger\nx = time.monotonic()\n", encoding="utf-8")
    assert "app" in imports_of(bad)
    tree = ast.parse(bad.read_text())
    assert any(isinstance(n, ast.Attribute) and n.attr == "monotonic" for n in ast.walk(tree))
