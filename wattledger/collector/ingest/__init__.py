"""Ingest: request checks and limits, the group-commit writer, and the transaction that dedupes,
accounts and stores a group of batches."""
