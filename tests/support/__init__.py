"""Test support shared by the tests and the benchmarks, kept out of the installed package.

The tests import it as ``support`` (pytest puts ``tests/`` on the path); a
benchmark script puts ``tests/`` on its path first. Nothing in ``rap`` imports it.
"""
