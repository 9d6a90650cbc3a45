"""What a trained model is worth: linear probes, sparsity sweeps, the gradient check (the metrics every
layer measures a model with are in objective/metrics.py)."""
