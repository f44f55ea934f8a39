"""``make bench``: speed and size figures, printed as one table and written to BENCHMARKS.md and bench.json."""
