"""Static checks of the repository's files: docs, manifests, layout (no servers needed)."""
