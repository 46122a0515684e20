"""The benchmark of the real stack (`make bench`, docs/benchmarks.md)."""
