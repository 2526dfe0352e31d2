"""Figures: matched patches, attention maps, training curves (PNG)."""
