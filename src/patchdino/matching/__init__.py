"""Geometric patch matching between augmented views."""
