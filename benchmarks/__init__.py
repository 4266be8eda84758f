"""Speed and memory benchmarks: `python -m benchmarks [NAME ...] [--runs N]` prints medians."""
