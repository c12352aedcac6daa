"""`make bench` keeps working: every benchmark runs end to end at a tiny size.

The benchmarks are not part of CI's run, so a change to the configuration contract (say,
`evidence = ["ots"]` becoming an error) once broke two of them without a failing test. Here
each one runs with the smallest sizes it takes, its results written to a temporary folder
(STAMPD_BENCH_RESULTS) so the real figures in bench/results/ are left alone. Nothing about
speed is asserted (DESIGN §10): only that it ran and wrote its table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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
        [
            *("--files", "300", "--quiet", "0.2s", "--rounds", "2"),
            *("--latency-samples", "3", "--new-directories", "3"),
        ],
        "scan.json",
    ),
    "bench_stamping.py": (
        ["--files", "10", "--quiet", "0.2s", "--latency-samples", "3", "--failover-files", "6"],
        "stamping.json",
    ),
    "bench_ots.py": (["--files", "20", "--quiet", "0.2s", "--latency-samples", "3"], "ots.json"),
}


def _aide_reference() -> ModuleType:
    """bench/aide_reference.py, loaded from its file: bench/ is scripts, not a package on the
    path (and putting the checkout's root on sys.path would shadow PyPI's ``daemon``)."""
    spec = importlib.util.spec_from_file_location(
        "bench_aide_reference", REPO / "bench" / "aide_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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


def _tiny_tree(root: Path, files: int) -> list[Path]:
    paths = []
    for number in range(files):
        path = root / f"d{number // 4}" / f"f{number}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(number.to_bytes(8, "big") + b"x" * 4088)
        paths.append(path)
    return paths


def test_the_aide_reference_hashes_both_digests_of_every_file(short_tmp: Path) -> None:
    """The configuration bench_scan.py times really makes AIDE hash each file with SHA-256
    and SHA-512 (a rule without them would be a stat walk and a flattering reference), and
    the database check sees it: the counts, and one file's digests equal to hashlib's."""
    aide = require_tool("aide")
    reference = _aide_reference()
    run_init, check_database = reference.run_init, reference.check_database
    paths = _tiny_tree(short_tmp / "tree", 10)
    setup = reference.write_config(short_tmp / "aide", short_tmp / "tree")
    run_init(aide, setup)
    check = check_database(setup, paths[3])
    assert (check.regular_files, check.with_both_digests, check.sample_matches) == (10, 10, True)

    # The check is not a formality: without the digests in the rule it says so.
    setup.config.write_text(setup.text.replace("+sha256+sha512", ""))
    run_init(aide, setup)
    check = check_database(setup, paths[3])
    assert (check.regular_files, check.with_both_digests, check.sample_matches) == (10, 0, False)
    # And a file changed after AIDE read it no longer matches its entry.
    setup.config.write_text(setup.text)
    run_init(aide, setup)
    paths[3].write_bytes(b"changed")
    assert not check_database(setup, paths[3]).sample_matches


@pytest.mark.slow
def test_the_scan_bench_reports_the_aide_column(short_tmp: Path) -> None:
    """bench_scan.py times AIDE beside stampd and sha256sum, writes the ratio, and records
    that AIDE's database held both digests of every file of the tree."""
    require_tool("aide")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_scan.py"), *SMALL["bench_scan.py"][0]],
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
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((short_tmp / "results" / "scan.json").read_text())
    assert figures["aide_skipped"] is None
    assert figures["aide_files_per_s"] > 0
    assert figures["ratio_aide"] == figures["stampd_files_per_s"] / figures["aide_files_per_s"]
    assert figures["aide_database"]["with_both_digests"] == figures["files"]
    assert figures["aide_database"]["sample_matches"] is True
    assert "sha256+sha512" in figures["aide_config"]


@pytest.mark.slow
def test_without_aide_the_scan_bench_says_how_to_get_it(short_tmp: Path) -> None:
    """No AIDE on PATH: the bench does not install anything itself (that is `make bench`'s
    step, as root); its column is skipped with the command that gets it."""
    # A PATH with what the bench runs besides AIDE (the shell pipelines of the references).
    tools = short_tmp / "bin"
    tools.mkdir()
    for tool in ("find", "xargs", "sha256sum", "cat", "sync", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(tools)}
    assert shutil.which("aide", path=str(tools)) is None
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_scan.py"), *SMALL["bench_scan.py"][0]],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=short_tmp,
        env={**env, "STAMPD_BENCH_RESULTS": str(short_tmp / "results"), "TMPDIR": str(short_tmp)},
    )
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((short_tmp / "results" / "scan.json").read_text())
    assert "apt-get install aide" in figures["aide_skipped"]
    assert figures["aide_files_per_s"] is None
    assert "apt-get install aide" in done.stdout
