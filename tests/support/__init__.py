"""Helpers the tests share that are too large to sit at the top of a test module."""
