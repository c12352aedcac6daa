"""`make bench` keeps working: every benchmark runs end to end at a tiny size.

The benchmarks are not part of CI's run, so a change to the configuration contract (say,
`evidence = ["ots"]` becoming an error) once broke two of them without a failing test. Here
each one runs with the smallest sizes it takes, its results written to a temporary folder
(STAMPD_BENCH_RESULTS) so the real figures in bench/results/ are left alone. Nothing about
speed is asserted (DESIGN §10): only that it ran and wrote its table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool

SMALL = {
    "bench_cli.py": (["--runs", "1"], "cli.json"),
    "bench_digest.py": (["--size-mib", "4", "--runs", "1"], "digest.json"),
    "bench_index.py": (
        ["--dirs", "2", "--files-per-dir", "20", "--versions", "2", "--runs", "1"],
        "index.json",
    ),
    "bench_scan.py": (
        ["--files", "300", "--quiet", "0.2s", "--latency-samples", "3", "--new-directories", "3"],
        "scan.json",
    ),
    "bench_stamping.py": (
        ["--files", "10", "--quiet", "0.2s", "--latency-samples", "3", "--failover-files", "6"],
        "stamping.json",
    ),
    "bench_ots.py": (["--files", "20", "--quiet", "0.2s", "--latency-samples", "3"], "ots.json"),
}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # The benchmarks put a control socket in their temporary folder: a Unix socket path must
    # fit in 108 bytes, which pytest's tmp_path does not.
    path = Path(tempfile.mkdtemp(prefix="stampd-smoke-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL))
def test_each_benchmark_runs_at_a_tiny_size(script: str, short_tmp: Path) -> None:
    require_tool("openssl")
    arguments, result = SMALL[script]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=short_tmp,
        env={
            **os.environ,
            "STAMPD_BENCH_RESULTS": str(short_tmp / "results"),
            "TMPDIR": str(short_tmp),
        },
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    # Exit 1 is a missed target, which tiny sizes may well miss; a crash is a traceback.
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, output
    assert json.loads((short_tmp / "results" / result).read_text()), output
