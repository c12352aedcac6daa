"""Every time in `--json` output is ISO 8601 UTC text, never a Unix number.

A script reads `stampd status --json` next to `show --json` and `providers --json`; a time
that is a float in one and text in the other is a trap. Durations (`*_seconds`, `*_s`,
`*_ms`) stay numbers, and so do the raw stat fields `mtime_ns` / `ctime_ns` of a version.
The metrics keep Unix seconds (Prometheus convention): not checked here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.daemon_harness import RunningDaemon, wait_for

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
#: Keys that name a point in time, by how stampd spells them.
TIME_KEY = re.compile(r"(_at|_since|^gen_time|_not_after|_time)$")
#: The stat fields of a version: exact integers compared with the file, on purpose.
RAW_STAT = {"mtime_ns", "ctime_ns"}


def _times(document: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(document, dict):
        for key, value in document.items():
            if TIME_KEY.search(key) and key not in RAW_STAT:
                yield f"{where}.{key}", value
            yield from _times(value, f"{where}.{key}")
    elif isinstance(document, list):
        for number, item in enumerate(document):
            yield from _times(item, f"{where}[{number}]")


def _assert_iso(document: Any) -> int:
    found = 0
    for where, value in _times(document):
        assert value is None or (isinstance(value, str) and ISO_UTC.match(value)), (where, value)
        found += value is not None
    return found


def test_status_providers_and_show_give_times_as_iso_text(tmp_path: Path) -> None:
    daemon = RunningDaemon(
        tmp_path,
        evidence='["tsr"]',
        # Nothing listens on port 9: the job fails, which fills attempts and backoff times.
        extra='[[timestamp.tsa]]\nname = "nowhere"\nurl = "http://127.0.0.1:9/"\n',
    ).start()
    try:
        record = daemon.watched / "a.txt"
        record.write_text("a record\n")
        daemon.wait_event("tsr_job_backing_off")
        daemon.wait_event("scan_finished")

        def status_json() -> dict[str, Any]:
            return dict(json.loads(daemon.cli("status", "--json").stdout))

        # The scan's time is set just after its event: ask again until the reply has it.
        wait_for(
            lambda: status_json()["daemon"]["scans"][0]["last_full_scan_at"] is not None,
            10,
            "a finished scan in the status reply",
            daemon,
        )
        status = status_json()
        scan = status["daemon"]["scans"][0]
        assert ISO_UTC.match(scan["last_full_scan_at"]), scan
        assert _assert_iso(status) >= 3  # started_at, last_full_scan_at, next_retry_at, ...
        providers = json.loads(daemon.cli("providers", "--json").stdout)
        assert _assert_iso(providers) >= 1  # last_failure_at
        shown = json.loads(daemon.cli("show", "--json", str(record)).stdout)
        assert _assert_iso(shown) >= 4  # first_seen_at, seen_at, hashed_at, started_at, ...
    finally:
        assert daemon.stop() == 0
