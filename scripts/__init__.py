"""The scripts, importable as ``scripts.NAME`` by the tests (run from the repository root)."""
