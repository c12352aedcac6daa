"""`make bench`: run every benchmark in this folder, one after the other, in one process tree.

Each benchmark prints its own table and writes bench/results/<name>.json; targets are the
ratios of DESIGN §11, measured against a reference run on the same machine in the same run.
First, the references that are packages are got: AIDE (bench/aide_reference.py) is installed
with apt-get when it is missing and this is root; otherwise that step says how, and
bench_scan.py leaves AIDE's column empty with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "bench_cli.py",
    "bench_digest.py",
    "bench_index.py",
    "bench_scan.py",
    "bench_stamping.py",
    "bench_ots.py",
]


def main() -> int:
    failed = []
    # Never fails the run: without AIDE, bench_scan.py still measures the rest.
    subprocess.run([sys.executable, str(HERE / "aide_reference.py")], check=False)
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], check=False).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
