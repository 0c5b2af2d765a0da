"""The benchmark is a program (`python -m tests.bench`), not a test suite: pytest collects nothing
here, so the default test run never starts servers or load generators from this folder."""

collect_ignore_glob = ["*"]
