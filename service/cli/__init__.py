"""The `wooshpay-webhooks` command line: the entry point that wires ingress, workers and store."""
