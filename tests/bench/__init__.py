"""Performance benchmark: ingest, reconcile and end-to-end latency, each next to a baseline
measured in the same run (run it with `scripts/bench` or `uv run python -m tests.bench`)."""
