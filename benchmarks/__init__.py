"""Benchmarks for talon-classic: run ``python -m benchmarks`` for the whole table."""
