"""Dense prediction on frozen patch tokens: semantic segmentation probes, their data and
metrics.
"""
