"""The SQLite index (DESIGN §7): one writer, read-only readers, every table under migrations.

- ``schema``: tables, allowed values and the migrations; the evidence-kind check.
- ``connection``: where the index lives, opening a connection, read-only readers (no
  sqlite-utils: the CLI's queries load only this).
- ``database``: the writer's :class:`~.database.Index` (readers re-exported).
- ``times``: the index's time format.
- ``versions``: recording settled files — versions, renames, unreadable and missing files.
- ``jobs``: evidence jobs — due work and how each round ends (proofs, attempts).
- ``scan_rows``: the rows the reconciliation scan compares with the disk.
- ``commitments``: where each pending proof waits — its (provider, commitment) pairs.
- ``queries``: what ``status``, ``ls``, ``show`` and ``providers`` read.
- ``counts``: what the metrics export reads.
"""
