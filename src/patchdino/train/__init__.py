"""Training: schedules, optimiser, checkpoints, metrics and the loop."""
