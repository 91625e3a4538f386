"""Benchmarks: run by `make bench`, write bench/results/*.json and docs/results/*.md; never tests."""
