//! Storage conformance suite (filled in with the SQLite store).
