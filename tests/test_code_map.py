"""The README's "Code map" names every module, and no module outgrows what a reader can hold.

DESIGN §2: a newcomer finds a behaviour by its folder and file name, one concept per module,
none over ~500 lines. The map is documentation that goes stale silently; these tests make a
new, moved or deleted module a failing test until the map says where it lives.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The line count past which a module is split (DESIGN §2: "none over ~500 lines").
MAX_LINES = 500
_MAPPED = re.compile(r"`((?:daemon|store)/[\w/]*?\w+\.py)`")


def _modules() -> set[str]:
    return {
        str(path.relative_to(REPO))
        for top in ("daemon", "store")
        for path in (REPO / top).rglob("*.py")
        if path.name != "__init__.py"
    }


def _code_map() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n## Code map")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def test_every_module_is_on_the_code_map() -> None:
    mapped = set(_MAPPED.findall(_code_map()))
    missing = sorted(_modules() - mapped)
    assert not missing, f"add these to README.md's Code map: {missing}"


def test_every_file_on_the_code_map_exists() -> None:
    gone = sorted(set(_MAPPED.findall(_code_map())) - _modules())
    assert not gone, f"README.md's Code map names files that do not exist: {gone}"


def test_the_map_would_catch_a_missing_module() -> None:
    assert "daemon/service/lifecycle.py" in _modules()
    assert _MAPPED.findall("x `daemon/watch/intake.py` y `store/kinds.py`") == [
        "daemon/watch/intake.py",
        "store/kinds.py",
    ]


def test_no_module_is_over_the_line_limit() -> None:
    long = sorted(
        (lines, name)
        for name in _modules()
        if (lines := len((REPO / name).read_text().splitlines())) > MAX_LINES
    )
    assert not long, f"split these modules (DESIGN §2, at most {MAX_LINES} lines): {long}"
