"""The webhook ingress: verify, record durably in the inbox, enqueue, answer fast."""
