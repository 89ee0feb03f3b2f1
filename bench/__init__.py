"""Benchmark harness: every resolver, every scenario, in one run on the simulated VPC."""
