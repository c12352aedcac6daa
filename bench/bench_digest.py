"""Digest throughput against openssl, measured in the same run (DESIGN §11).

Creates a random file (1 GiB by default) in a temporary directory, reads it once so that
every measurement sees the page cache, then times each contender best of --runs, the runs
interleaved so that a slow patch of the machine hits them all alike:

- ``stampd digest FILE``, the command as a user runs it (process start, imports, hashing,
  output), against ``openssl dgst -sha256 FILE``: target >= 0.9x
- ``stampd digest --algo sha512 FILE`` against ``openssl dgst -sha512 FILE``: >= 0.9x
- ``stampd digest --json FILE`` (both digests, one read) against ``openssl dgst -sha512``
  alone: >= 0.85x
- the library calls under them, without the process: ``sha256_fd`` against
  ``openssl dgst -sha256`` (>= 0.9x) and ``digest_fd`` against ``openssl dgst -sha512`` (>= 0.85x)

Prints a table and writes bench/results/digest.json; exits 1 if a target is missed.

    python bench/bench_digest.py [--size-mib 1024] [--runs 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from stampd.store.files.digest import CHUNK_SIZE, digest_fd, sha256_fd

# STAMPD_BENCH_RESULTS: elsewhere (tests/test_bench_smoke.py runs tiny sizes, whose figures
# must not replace the real ones).
RESULTS = Path(
    os.environ.get("STAMPD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)
MiB = 1 << 20
T = TypeVar("T")


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as file:
        left = size
        while left:
            block = min(left, 16 * MiB)
            file.write(os.urandom(block))
            left -= block


def warm(path: Path) -> None:
    with path.open("rb", buffering=0) as file:
        while file.read(16 * MiB):
            pass


def openssl_runner(openssl: str, algo: str, path: Path) -> Callable[[], str]:
    def run() -> str:
        out = subprocess.run(
            [openssl, "dgst", f"-{algo}", "-r", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()[0]

    return run


def stampd_runner(stampd: str, path: Path, *options: str) -> Callable[[], str]:
    def run() -> str:
        return subprocess.run(
            [stampd, "digest", *options, str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    return run


def stampd_program() -> str | None:
    """The `stampd` console script of the interpreter running this bench (the venv's)."""
    beside = Path(sys.executable).with_name("stampd")
    return str(beside) if beside.exists() else shutil.which("stampd")


def fd_runner(func: Callable[[int], T], path: Path) -> Callable[[], T]:
    def run() -> T:
        fd = os.open(path, os.O_RDONLY)
        try:
            return func(fd)
        finally:
            os.close(fd)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="test file size (MiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (best counts)")
    parser.add_argument("--dir", default=None, help="where to create the test file")
    args = parser.parse_args()

    openssl = shutil.which("openssl")
    if openssl is None:
        print("openssl is not installed: no reference to measure against", file=sys.stderr)
        return 1
    stampd = stampd_program()
    if stampd is None:
        print("no stampd program beside this Python: run it with .venv/bin/python", file=sys.stderr)
        return 1
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="stampd-bench-digest-", dir=args.dir) as tmp:
        path = Path(tmp) / "random.bin"
        print(f"writing {args.size_mib} MiB of random data to {path} ...", flush=True)
        make_file(path, size)
        warm(path)

        # A benchmark of wrong answers is worthless: check ours against openssl first (this
        # also starts the helper thread, which a long-running daemon has started long ago).
        both = fd_runner(digest_fd, path)()
        alone = fd_runner(sha256_fd, path)()
        assert both.sha256_hex == openssl_runner(openssl, "sha256", path)()
        assert both.sha512_hex == openssl_runner(openssl, "sha512", path)()
        assert alone == both.sha256
        assert stampd_runner(stampd, path)() == f"{both.sha256_hex}  {path}\n"
        assert stampd_runner(stampd, path, "--algo", "sha512")() == f"{both.sha512_hex}  {path}\n"
        (listed,) = json.loads(stampd_runner(stampd, path, "--json")())["files"]
        assert (listed["sha256"], listed["sha512"]) == (both.sha256_hex, both.sha512_hex)

        contenders: dict[str, Callable[[], object]] = {
            "openssl dgst -sha256": openssl_runner(openssl, "sha256", path),
            "openssl dgst -sha512": openssl_runner(openssl, "sha512", path),
            "stampd digest": stampd_runner(stampd, path),
            "stampd digest --algo sha512": stampd_runner(stampd, path, "--algo", "sha512"),
            "stampd digest --json (both)": stampd_runner(stampd, path, "--json"),
            "sha256_fd (SHA-256 alone)": fd_runner(sha256_fd, path),
            "digest_fd (SHA-256 + SHA-512)": fd_runner(digest_fd, path),
        }
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, run in contenders.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)

    throughput = {name: size / min(times) / 1e6 for name, times in seconds.items()}
    checks = [
        ("stampd digest", "openssl dgst -sha256", 0.9),
        ("stampd digest --algo sha512", "openssl dgst -sha512", 0.9),
        ("stampd digest --json (both)", "openssl dgst -sha512", 0.85),
        ("sha256_fd (SHA-256 alone)", "openssl dgst -sha256", 0.9),
        ("digest_fd (SHA-256 + SHA-512)", "openssl dgst -sha512", 0.85),
    ]

    print(f"\n{args.size_mib} MiB, page cache warm, best of {args.runs}, CHUNK_SIZE {CHUNK_SIZE}")
    print(f"{'what':<32} {'MB/s':>7}   {'reference':<22} {'MB/s':>7} {'ratio':>6} {'target':>7}")
    rows = []
    for ours, reference, target in checks:
        ratio = throughput[ours] / throughput[reference]
        verdict = "PASS" if ratio >= target else "MISS"
        print(
            f"{ours:<32} {throughput[ours]:>7.0f}   {reference:<22} {throughput[reference]:>7.0f}"
            f" {ratio:>5.2f}x {target:>5.2f}x  {verdict}"
        )
        rows.append(
            {
                "what": ours,
                "mb_per_s": round(throughput[ours], 1),
                "reference": reference,
                "reference_mb_per_s": round(throughput[reference], 1),
                "ratio": round(ratio, 3),
                "target": target,
                "pass": ratio >= target,
            }
        )

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "digest.json").write_text(
        json.dumps(
            {
                "size_bytes": size,
                "runs": args.runs,
                "chunk_size": CHUNK_SIZE,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "openssl_python": ssl.OPENSSL_VERSION,
                "openssl_cli": subprocess.run(
                    [openssl, "version"], capture_output=True, text=True, check=True
                ).stdout.strip(),
                "seconds": seconds,
                "mb_per_s": {name: round(value, 1) for name, value in throughput.items()},
                "targets": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten: {RESULTS / 'digest.json'}")
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
