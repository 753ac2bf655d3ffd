"""Benchmarks and the performance budget (docs/benchmarks.md): `python -m bench`.

Every figure is measured beside its baseline in the same run and reported as a ratio; nothing
here asserts a timing.
"""
