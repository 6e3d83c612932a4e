"""The dependency direction of docs/architecture.md, checked on the source (imports anywhere in
a module, lazy ones included) and on what ``import calpipe.errors`` loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "calpipe"

NAMES = {"calpipe.schema", "calpipe.errors"}
CORE = {"calpipe.qa", "calpipe.config", "calpipe.products"}
IO = {"calpipe.l0", "calpipe.l1", "calpipe.artifacts", "calpipe.telescopes"}
ORCHESTRATION = {"calpipe.stages", "calpipe.runner", "calpipe.pipeline", "calpipe.workflow",
                 "calpipe.cli", "calpipe.quicklook", "calpipe.report", "calpipe.simulate"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("calpipe")}


def _modules() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _within(name: str, group: set[str]) -> bool:
    return any(name == g or name.startswith(g + ".") for g in group)


def _violations(layer: set[str], forbidden: set[str]) -> list[str]:
    return sorted(f"{mod} imports {imp}" for mod, imps in _modules().items()
                  if _within(mod, layer) for imp in imps if _within(imp, forbidden))


def test_names_import_nothing_of_calpipe() -> None:
    bad = [f"{m}: {sorted(i)}" for m, i in _modules().items()
           if m in NAMES and i - NAMES - {"calpipe"}]
    assert not bad


def test_core_never_imports_io_or_orchestration() -> None:
    core = CORE | {"calpipe.physics"}
    assert not _violations(core, IO | ORCHESTRATION | {"calpipe.atmosphere"})


def test_io_never_imports_orchestration() -> None:
    assert not _violations(IO | {"calpipe.atmosphere"}, ORCHESTRATION)


def test_fault_injectors_are_not_installed() -> None:
    assert not (PACKAGE / "faults.py").exists()


@pytest.mark.parametrize("module", ["calpipe", "calpipe.errors", "calpipe.schema"])
def test_light_imports(module: str) -> None:
    code = (f"import sys, {module}; heavy = [m for m in ('numpy', 'zarr', 'scipy', 'xarray') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"import {module} loads {out}"
