"""DESIGN §2: `store/` never imports `daemon/` — the sentence that is the architecture."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("stampd.daemon", "daemon")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import climbing out of store/ (`from ..daemon import x`) counts too.
            module = node.module or ""
            if node.level >= 2:
                module = f"stampd.{module}" if module else "stampd"
            found.append((node.lineno, module))
    return found


def test_no_store_module_imports_the_daemon() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line}: import {name}"
        for path in sorted((REPO / "store").rglob("*.py"))
        for line, name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    ]
    assert not offenders, "\n".join(offenders)


def test_importing_every_store_module_loads_nothing_from_the_daemon() -> None:
    """Catches indirect imports (through a third module) that the static check cannot see."""
    modules = sorted(
        "stampd.store." + ".".join(path.relative_to(REPO / "store").with_suffix("").parts)
        for path in (REPO / "store").rglob("*.py")
        if path.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('stampd.daemon')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_static_check_would_catch_an_offender(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("from stampd.daemon.config import Config\nfrom ..daemon import x\n")
    assert [name for _line, name in _imports(sample)] == ["stampd.daemon.config", "stampd.daemon"]


#: LGPL libraries the tests install as an oracle (opentimestamps-client and what it pulls in);
#: stampd writes its own codec from the format description and never imports them.
TEST_ONLY_ORACLES = ("opentimestamps", "otsclient", "bitcoin")


def test_no_product_module_imports_a_test_only_oracle() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line}: import {name}"
        for top in ("daemon", "store")
        for path in sorted((REPO / top).rglob("*.py"))
        for line, name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in TEST_ONLY_ORACLES)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_oracle_check_would_catch_an_import(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import opentimestamps.core.op\nfrom bitcoin.core import CBlockHeader\n")
    names = [name for _line, name in _imports(sample)]
    assert [n for n in names if n.split(".")[0] in TEST_ONLY_ORACLES] == names
