"""Simulated edge fleets for the local cluster, tests and benchmarks."""
