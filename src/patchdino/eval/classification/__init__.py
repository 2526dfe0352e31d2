"""Image classification on frozen features: weighted k-NN and linear probes."""
