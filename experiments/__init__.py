"""Experiments that produce the published tables and plots in docs/results (run by `make bench`)."""
