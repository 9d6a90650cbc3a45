"""Evaluation metrics on a data split; no penalty, no gradients."""
from __future__ import annotations

import torch

from ..errors import SparseAEError
from ..model import SparseAutoencoder
from ..model.codes import support_firing_counts


def require_finite_weights(model: SparseAutoencoder) -> None:
    """Refuse a model with a NaN or infinite parameter (a diverged run): its metrics would be NaN, or
    0 where a NaN never fires, which reads as a sparse model."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise SparseAEError(f"the model's weights are not finite ({name} holds NaN or infinity)")


def evaluate(model: SparseAutoencoder, x: torch.Tensor, chunk: int = 8192,
             active_threshold: float | None = None, method: str | None = None) -> dict[str, float]:
    """Reconstruction and sparsity of the code layer over all rows of `x` (evaluate_with_frequency's metrics)."""
    return evaluate_with_frequency(model, x, chunk, active_threshold, method)[0]


@torch.no_grad()
def evaluate_with_frequency(model: SparseAutoencoder, x: torch.Tensor, chunk: int = 8192,
                            active_threshold: float | None = None, method: str | None = None
                            ) -> tuple[dict[str, float], torch.Tensor]:
    """Reconstruction and sparsity of the code layer over all rows of `x`, and each code unit's firing
    frequency on them (unit_firing_frequency's, from the same pass: a run's last validation gives its
    feature density without a second pass over the rows).

    mse: mean squared error per feature; fvu: fraction of variance unexplained,
    sum ||x - x_hat||^2 / sum ||x - mean(x)||^2; mean_activation: mean code value
    over examples and units; l0: mean number of firing code values per example,
    firing meaning |h| > `active_threshold` (default: the model's, 1e-2 for sigmoid
    codes, which are never exactly 0, else 0); dead_fraction: share of code units
    that fire on none of the rows (the one definition of dead, as `never_fired_fraction`;
    no threshold on the values, whose scale is the data's). `method`: the code of
    model.encode(x, method=method) ('omp', 'mp': pursuit over the decoder) instead of the model's own.
    """
    thr = model.active_threshold if active_threshold is None else active_threshold
    was_training = model.training
    model.eval()
    # `x` may also be an iterable of row chunks (a file streamed chunk by chunk): one pass over them.
    chunks = (x[i:i + chunk] for i in range(0, x.shape[0], chunk)) if torch.is_tensor(x) else x
    n, sq_err, l0, code_sum, mean, m2, fired = 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0
    for xb in chunks:
        out = model(xb) if method is None else model.forward_encoded(xb, method)
        sq_err += (out.recon.float() - out.target.float()).pow(2).sum().double()
        chunk_fired, chunk_sum = _firing_and_sum(out, thr)
        fired = fired + chunk_fired  # rows on which each unit fired
        l0 += chunk_fired.sum().double()
        code_sum += chunk_sum
        # variance in the space the model reconstructs: per chunk in float32, about the chunk's mean (two
        # passes, relative error ~1e-7; torch.var_mean took 6x as long), chunks merged in float64 as in Chan et al.
        t = out.target.float()
        m = t.shape[0]
        cm = t.mean(0)
        sq = (t - cm).pow_(2).sum(0).double()
        delta = cm.double() - mean
        m2 = m2 + sq + delta.pow(2) * (n * m / (n + m))
        mean = mean + delta * (m / (n + m))
        n += m
    model.train(was_training)
    total_var = m2.sum()
    return {
        "mse": (sq_err / (n * model.config.output_dim())).item(),
        "fvu": (sq_err / total_var.clamp_min(1e-30)).item(),
        "mean_activation": (code_sum / (n * model.config.hidden[-1])).item() if n else 0.0,
        "dead_fraction": (fired == 0).double().mean().item() if n else 0.0,
        "l0": (l0 / n).item(),
    }, (fired.double() / n if n else torch.zeros(model.config.hidden[-1], dtype=torch.float64)).cpu()


def _firing_and_sum(out, thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per code unit, the rows of this chunk on which it fired (|h| > thr; int32 counts), and the sum of
    the code (float64). A TopK code is read from its k kept values a row, not from the whole code."""
    if out.topk_support is not None:
        values, indices = out.topk_support
        return support_firing_counts(values, indices, out.hidden[-1].shape[1], thr), values.double().sum()
    code = out.hidden[-1]
    firing = code != 0 if thr == 0 else code.abs() > thr
    return firing.sum(0, dtype=torch.int32), code.float().sum().double()  # (int32: 2x faster than int64)


@torch.no_grad()
def unit_firing_frequency(model: SparseAutoencoder, x: torch.Tensor, active_threshold: float | None = None,
                          chunk: int = 8192) -> torch.Tensor:
    """Share of the rows of `x` on which each code unit fires (|h| > threshold): the feature density."""
    thr = model.active_threshold if active_threshold is None else active_threshold
    was_training = model.training
    model.eval()
    counts = torch.zeros(model.config.hidden[-1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], chunk):
        counts += (model.encode_all(x[i:i + chunk])[-1].abs() > thr).sum(0).double()
    model.train(was_training)
    return (counts / max(x.shape[0], 1)).cpu()


# --- dead latents ---------------------------------------------------------------------------------

DEAD_WARNING_FRACTION = 0.01
"""A run whose code has more than this share of units that never fired on the validation split warns."""


def never_fired_fraction(frequency: torch.Tensor) -> float:
    """Share of code units that fired on none of the rows (`frequency` from unit_firing_frequency)."""
    return (frequency == 0).double().mean().item()


def dead_latent_warning(fraction: float, units: int) -> str | None:
    """The warning line of a run with more than DEAD_WARNING_FRACTION never-firing code units, else None."""
    if fraction <= DEAD_WARNING_FRACTION:
        return None
    return (f"warning: {100 * fraction:.1f}% of the {units} code units ({round(fraction * units)}) never fired on "
            "the validation split: they cost compute and reconstruct nothing. With a TopK family keep AuxK on "
            "(--auxk yes) and the default --lr; otherwise lower --lr, train longer, or use fewer units "
            "(docs/sparsity_families.md, 'Dead latents')")


# --- the PCA reference ---------------------------------------------------------------------------

@torch.no_grad()
def pca_fvu(train_x: torch.Tensor, test_x: torch.Tensor, max_components: int | None = None) -> torch.Tensor:
    """FVU on `test_x` of PCA fitted on `train_x`, for 0, 1, ..., max_components components (one entry each).

    PCA with k components is the best linear code with k dense values per example, so a sparse code
    with L0 = k that does not beat it has learned nothing a projection does not give. The principal
    directions come from the training covariance (float64); the test rows are centred with the training
    mean, and the FVU's denominator is the test rows' variance about their own mean, as in `evaluate`.
    """
    train, test = train_x.double(), test_x.double()
    mean = train.mean(0)
    centred = train - mean
    cov = centred.t() @ centred / max(train.shape[0] - 1, 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    d = vecs.shape[1] if max_components is None else min(max_components, vecs.shape[1])
    basis = vecs.flip(1)[:, :d]
    t = test - mean
    captured = torch.cat([t.new_zeros(1), (t @ basis).pow(2).sum(0).cumsum(0)])
    total_var = (test - test.mean(0)).pow(2).sum()
    return ((t.pow(2).sum() - captured) / total_var).float().cpu()


def pca_fvu_at(curve: torch.Tensor, l0: float) -> float:
    """PCA's FVU at a (fractional) L0, interpolated linearly between whole numbers of components."""
    l0 = min(max(l0, 0.0), curve.numel() - 1.0)
    lo = int(l0)
    hi = min(lo + 1, curve.numel() - 1)
    w = l0 - lo
    return float((1 - w) * curve[lo] + w * curve[hi])
