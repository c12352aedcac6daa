"""The wheel carries every package of the tree under the `stampd` namespace (DESIGN §2)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tree_packages() -> set[str]:
    packages = set()
    for top in ("daemon", "store"):
        for init in (REPO / top).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO).parts
            packages.add(".".join(("stampd", *parts)))
    return packages


def test_pyproject_lists_every_package_in_the_tree() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _tree_packages()
    for package in setuptools["packages"]:
        folder = package.removeprefix("stampd.").replace(".", "/")
        assert setuptools["package-dir"].get(package, folder) == folder


@pytest.mark.slow
def test_built_wheel_contains_every_module(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = tmp_path.glob("stampd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "stampd/" + str(path.relative_to(REPO))
        for top in ("daemon", "store")
        for path in (REPO / top).rglob("*")
        if path.suffix == ".py" or path.name == "py.typed"
    }
    assert expected <= names, sorted(expected - names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "stampd = stampd.daemon.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
