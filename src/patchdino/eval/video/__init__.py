"""Video object segmentation by label propagation: DAVIS-2017 data, propagation, J&F, and the
Moving Fashion videos.
"""
