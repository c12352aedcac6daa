"""The SQLite index: schema and migrations, versions, jobs and proofs, queries."""
