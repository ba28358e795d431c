"""Ingest side: readers -> chunker -> processors (batch in, batch out, content-hash cached) -> bulk writer."""
