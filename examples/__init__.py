"""Example job code for the local cluster that `scripts/start` runs (see `tasks`)."""
