"""Data: data sets, multi-crop views with per-sample geometry, batches."""
