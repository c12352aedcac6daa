"""The identity of a file's content state as the filesystem reports it, without reading it.

``(dev, ino, size, mtime_ns, ctime_ns)`` is the key the reconciliation scan compares with the
index (reference/watching-and-service.md §3.4; borg and restic use the same fields): any
difference means the file may have changed and is hashed again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileStat:
    """``lstat``/``fstat`` fields that identify one content state of one file."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, result: os.stat_result) -> FileStat:
        """The key of an ``os.stat_result``."""
        return cls(
            result.st_dev, result.st_ino, result.st_size, result.st_mtime_ns, result.st_ctime_ns
        )

    def same_content_as(self, other: FileStat) -> bool:
        """True when nothing suggests the content changed (a rename changes only ctime)."""
        return (self.dev, self.ino, self.size, self.mtime_ns) == (
            other.dev,
            other.ino,
            other.size,
            other.mtime_ns,
        )
