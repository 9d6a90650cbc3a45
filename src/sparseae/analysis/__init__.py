"""What a trained model is worth: metrics, linear probes, sparsity sweeps, the gradient check."""
