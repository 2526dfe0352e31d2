"""Image retrieval and copy detection: descriptors, the revisited benchmarks, copies and their
metrics.
"""
