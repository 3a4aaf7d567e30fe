"""A run directory: its lock and records, checkpoints and how one is chosen, metrics, trackers, plots."""
