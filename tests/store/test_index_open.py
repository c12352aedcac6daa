"""Opening an index that is up to date needs no sqlite-utils (issue 13: start → READY).

sqlite-utils is about 40 ms of imports, a tenth of the daemon's start-up; its ``Migrations``
are needed only when a schema step is to be applied. :meth:`Index.open` compares the step
names with ``_sqlite_migrations`` itself, so a daemon restarting on its own index (or on
one it just created) never loads it; a new or older index still migrates through it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from stampd.store.index.database import Index
from stampd.store.index.schema import MIGRATION_SET, STEP_NAMES, migrations

_OPEN_AND_REPORT = """
import sys
from pathlib import Path
from stampd.store.index.database import Index
index = Index.open(Path(sys.argv[1]))
index.ensure_watch(Path("/srv/records"))
index.close()
print("sqlite_utils" in sys.modules)
"""


def _opens_with_sqlite_utils(db: Path) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_REPORT, str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip() == "True"


def test_an_up_to_date_index_opens_without_sqlite_utils(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    assert _opens_with_sqlite_utils(db), "a new index is built by the sqlite-utils steps"
    assert not _opens_with_sqlite_utils(db)
    conn = sqlite3.connect(db)
    try:
        applied = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid",
                (MIGRATION_SET,),
            )
        ]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert applied == list(STEP_NAMES)
    assert journal == "wal"


def test_the_step_names_are_the_migrations_steps_in_order(tmp_path: Path) -> None:
    from sqlite_utils import Database  # noqa: PLC0415 - what Index.open avoids

    assert [step.name for step in migrations.pending(Database(memory=True))] == list(STEP_NAMES)
    with Index.open(tmp_path / "index.sqlite") as index:
        assert migrations.pending(index.db) == []
