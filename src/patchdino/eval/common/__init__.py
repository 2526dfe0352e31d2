"""What every evaluation task shares: loading weights, the evaluation data and transform,
feature extraction, the command line's pipeline, the exports.
"""
