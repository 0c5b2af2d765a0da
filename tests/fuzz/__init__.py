"""Adversarial tests of the ingress: fuzzed and mutated deliveries, abusive HTTP clients."""
