"""The model: the autoencoder, its code layers (TopK/BatchTopK), the sparse TopK kernels,
the input transforms stored with it, and its weight initialisations."""
from .autoencoder import SparseAutoencoder
from .output import AutoencoderOutput

__all__ = ["AutoencoderOutput", "SparseAutoencoder"]
