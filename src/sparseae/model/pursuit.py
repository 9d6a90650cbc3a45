"""Sparse codes by pursuit over a trained dictionary: orthogonal matching pursuit and matching pursuit.

A one-layer SAE with a linear output reconstructs x_hat = D h + b, D the d x N decoder. Its encoder
guesses the support of h in one matrix product; where true features overlap it guesses wrong (the
amortisation gap, O'Neill et al. 2024). Pursuit searches the support against the dictionary itself.
With unit atoms a_j = D_j / ||D_j|| and y = x - b:

- matching pursuit (Mallat & Zhang 1993): k times, pick j = argmax_j |<r, a_j>| (argmax <r, a_j> for a
  non-negative code), add c_j = <r, a_j> to h_j, r <- r - c_j a_j. Then ||r'||^2 = ||r||^2 - c_j^2, so
  the residual never grows; an atom may be picked twice, so at most k non-zeros.
- orthogonal matching pursuit (Pati et al. 1993): the same pick, then the least-squares coefficients on
  all picked atoms S: (A_S^T A_S) h_S = A_S^T y. The residual is orthogonal to every picked atom, so
  each atom is picked once: exactly k non-zeros (fewer only if y is spanned sooner).

Both run on correlations, never on residuals in input space: with the Gram matrix G = A^T A (N x N)
and c0 = A^T y, the correlations of the residual are c = c0 - G[:, S] h_S, so one step costs a gather of
|S| rows of G per example (B x |S| x N) instead of a B x d x N product (Gram-matrix pursuit, as
scikit-learn's `orthogonal_mp_gram`). OMP solves its |S| x |S| systems batched by Cholesky, with a
ridge of 10 machine epsilons (relative) so that two (nearly) equal atoms cannot make one singular.
Coefficients are found on the unit atoms and divided by the column norms, so that D h = sum c_j a_j.
The matching-pursuit family (families.MP) trains through `matching_pursuit` end to end (Costa et al.
2025, MP-SAE): the picks are indices (no gradient), the coefficients are differentiable in y and D.
"""
from __future__ import annotations

import torch

from ..families import MP, TOPK

ENCODE_METHODS = (TOPK, "omp", MP)  # encode(method=...): the model's own code first (the default)
_RIDGE = 10.0  # machine epsilons
_CHUNK = 1024  # rows per batched OMP: its gathered Gram rows take chunk x k x N floats


def unit_atoms(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the d x N columns of `weight` at unit norm, their norms (N,)); a zero column stays zero."""
    norms = weight.pow(2).sum(0).sqrt()
    return weight / norms.clamp_min(1e-12), norms


class _Pursuit(torch.autograd.Function):
    """k matching-pursuit steps on correlations: c_t = c_{t-1} - s_t G[j_t], s_t = c_{t-1}[j_t] (ReLU'd
    when non-negative), G = A^T A. Returns the steps s (B x k) and picks j (B x k).

    Written out rather than left to autograd, whose graph zeroes an N x N gradient of G at every step
    (index_select's backward) and keeps k copies of c. Backward, t = k..1, g = dL/dc_t (0 at t = k):
    dL/ds_t = (incoming) - <g, G[j_t]>; dL/dG[j_t] += -s_t g; dL/dc_{t-1} = g + e_{j_t} s_t' dL/ds_t,
    and dL/dA = A (dL/dG + dL/dG^T)."""

    @staticmethod
    def forward(ctx, c0, atoms, k: int, nonneg: bool):
        gram = atoms.t() @ atoms
        c = c0.clone()
        picks = torch.empty((c0.shape[0], k), dtype=torch.long, device=c0.device)
        steps = c0.new_empty((c0.shape[0], k))
        for t in range(k):
            # max(dim) rather than argmax: 0.14 ms where argmax takes 2.0 (256 x 1024, one CPU thread)
            if nonneg:
                s, j = c.max(dim=1)
                s = s.clamp_min(0)
            else:
                j = c.abs().max(dim=1).indices
                s = c.gather(1, j.unsqueeze(1)).squeeze(1)
            c.addcmul_(s.unsqueeze(1), gram.index_select(0, j), value=-1)
            picks[:, t], steps[:, t] = j, s
        ctx.save_for_backward(atoms, gram, picks, steps)
        ctx.nonneg = nonneg
        ctx.mark_non_differentiable(picks)
        return steps, picks

    @staticmethod
    def backward(ctx, g_steps, _):
        atoms, gram, picks, steps = ctx.saved_tensors
        g = torch.zeros((picks.shape[0], gram.shape[0]), dtype=gram.dtype, device=gram.device)
        g_gram = torch.zeros_like(gram) if ctx.needs_input_grad[1] else None
        for t in reversed(range(picks.shape[1])):
            j, s = picks[:, t], steps[:, t]
            gs = g_steps[:, t] - (g * gram.index_select(0, j)).sum(1)
            if g_gram is not None:
                g_gram.index_add_(0, j, g * -s.unsqueeze(1))
            if ctx.nonneg:
                gs = gs * (s > 0)
            g.scatter_add_(1, j.unsqueeze(1), gs.unsqueeze(1))
        g_atoms = atoms @ (g_gram + g_gram.t()) if g_gram is not None else None
        return g, g_atoms, None, None


def matching_pursuit(y: torch.Tensor, weight: torch.Tensor, k: int, nonneg: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """`k` matching-pursuit steps of rows `y` (B x d) over the columns of `weight` (d x N, any norms).

    Returns (the B x N code h with weight @ h the approximation, the first correlations c0 = A^T y,
    the support as (values, indices), B x k each, an index repeated where an atom was picked twice).
    `nonneg`: pick the largest correlation and keep max(c, 0) (a ReLU code); else the largest |c|.
    Differentiable in `y` and `weight` (the picks carry no gradient)."""
    atoms, norms = unit_atoms(weight)
    c0 = y @ atoms
    steps, indices = _Pursuit.apply(c0, atoms, k, nonneg)
    values = steps / norms.clamp_min(1e-12)[indices]
    return torch.zeros_like(c0).scatter_add(1, indices, values), c0, (values, indices)


def pursuit_code(y: torch.Tensor, weight: torch.Tensor, k: int, method: str,
                 start: torch.Tensor | None = None, nonneg: bool = False) -> torch.Tensor:
    """The B x N code of rows `y` over the columns of `weight` by 'omp' or 'mp' (`nonneg`: MP's ReLU
    variant), `k` atoms, in chunks of rows. OMP with `start` (B x k indices, e.g. the encoder's choice)
    also solves least squares on that support and keeps, per row, whichever leaves the smaller residual."""
    if method == MP:
        return matching_pursuit(y, weight, k, nonneg)[0]
    atoms, norms = unit_atoms(weight)
    gram = atoms.t() @ atoms
    out = []
    for i in range(0, y.shape[0], _CHUNK):
        yb = y[i:i + _CHUNK]
        coef, residual = omp(yb, atoms, k, gram=gram)
        if start is not None:
            warm, warm_residual = omp(yb, atoms, k, start=start[i:i + _CHUNK], gram=gram)
            coef = torch.where((warm_residual < residual).unsqueeze(1), warm, coef)
        out.append(coef)
    return torch.cat(out) / norms.clamp_min(1e-12)


def _least_squares(rows: torch.Tensor, c0: torch.Tensor, support: torch.Tensor, ridge: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row b, the coefficients h on its `support` (B x t) minimising ||y - A_S h||^2, from the Gram
    rows of the support (`rows`, B x t x N), and the correlations of the residual, c0 - G[S]^T h."""
    t = support.shape[1]
    g = rows.gather(2, support.unsqueeze(1).expand(-1, t, -1))  # G_SS, B x t x t
    g = g + ridge * torch.eye(t, dtype=g.dtype, device=g.device)
    chol, _ = torch.linalg.cholesky_ex(g)
    h = torch.cholesky_solve(c0.gather(1, support).unsqueeze(2), chol).squeeze(2)
    return h, c0 - torch.bmm(h.unsqueeze(1), rows).squeeze(1)


def omp(y: torch.Tensor, atoms: torch.Tensor, k: int, start: torch.Tensor | None = None,
        gram: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal matching pursuit of rows `y` (B x d) over unit `atoms` (d x N), `k` atoms per row.

    `start` (B x m indices, m <= k, distinct per row): atoms every row keeps (a warm start, e.g. the
    encoder's choice); greedy picks add k - m more. Returns (B x N coefficients, the squared residual
    norm per row)."""
    gram = atoms.t() @ atoms if gram is None else gram
    c0 = y @ atoms
    (b, n), k = c0.shape, min(k, atoms.shape[1])
    ridge = _RIDGE * torch.finfo(gram.dtype).eps * gram.diagonal().mean().clamp_min(1e-12).item()
    # the support's Gram rows, filled one row per pick (indexing gram[support] anew each step was 3/4 of the time)
    rows = c0.new_empty((b, k, n))
    support = torch.empty((b, k), dtype=torch.long, device=c0.device)
    m = 0 if start is None else start.shape[1]
    h, c = c0.new_zeros((b, 0)), c0
    if m:
        support[:, :m] = start
        rows[:, :m] = gram.index_select(0, start.reshape(-1)).view(b, m, n)
        h, c = _least_squares(rows[:, :m], c0, support[:, :m], ridge)
    for t in range(m, k):
        score = c.abs().scatter_(1, support[:, :t], -1.0)  # a picked atom is never picked again
        j = score.max(dim=1).indices
        support[:, t] = j
        rows[:, t] = gram.index_select(0, j)
        h, c = _least_squares(rows[:, :t + 1], c0, support[:, :t + 1], ridge)
    coef = torch.zeros_like(c0).scatter_(1, support, h) if k else torch.zeros_like(c0)
    # least squares: ||y - A_S h||^2 = ||y||^2 - h . c0_S
    residual = y.pow(2).sum(1) - (h * c0.gather(1, support)).sum(1)
    return coef, residual.clamp_min(0)
