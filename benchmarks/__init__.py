"""Benchmarks: what dlaasd adds over the floor, as ratios measured in the same run."""
