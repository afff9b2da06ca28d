"""Benchmarks: measurements for operators, run by hand (`python -m bench.sizing`); not tests."""
