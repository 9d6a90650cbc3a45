"""A model trained a few Adam steps on FashionMNIST's labels: something real for the benchmarks that hook
a network's activations (ecosystem_compat.py, transcoder.py) to read."""
from __future__ import annotations


def train_briefly(model, data, steps: int, batch: int = 256):
    """`model` (rows of 784 pixels -> 10 logits) after `steps` Adam steps (lr 1e-3) on random batches of
    `data`'s training split, drawn by a generator seeded 0; returns it."""
    import torch

    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, data.train.shape[0], (batch,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(data.train[idx]), data.train_labels[idx]).backward()
        opt.step()
    return model
