"""Training loop, checkpoints and distributed evaluation helpers."""
