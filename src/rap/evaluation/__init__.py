"""Evaluation: the paper's benchmarks, with the paper's definitions, as ``rap eval``."""
