"""Sparse kernels for wide TopK autoencoders: work in proportion to the k active latents.

With n latents, d features and k active latents per example (n = 65,536,
d = 768, k = 32), a dense TopK autoencoder spends its time in five n x d
products per batch: the encoder forward, the encoder's two gradients, the
decoder forward and its gradient. Only the first must be dense (every latent's
pre-activation is needed to choose the top k). The rest involve only the k
chosen latents of each example:

- decoder forward: x_hat[b] = sum_j v[b, j] * W_dec[i[b, j]] (a gather of k rows,
  `embedding_bag`), k*d per example instead of n*d;
- its gradients: dv[b, j] = <g[b], W_dec[i[b, j]]>, and dW_dec[i[b, j]] += v[b, j] g[b]
  (only active rows receive anything);
- encoder gradients: the pre-activation gradient is non-zero only at the k
  chosen latents, so dW_enc[i[b, j]] += dz[b, j] x[b] and dx[b] = sum_j dz[b, j] W_enc[i[b, j]].

Weights are stored latent-major (n x d) for the gathers; `sparse_topk_forward`
wires the kernels into `SparseAutoencoder` (ModelConfig.topk_kernel = 'sparse').

`centered_linear` is the dense encoder of a model with a pre-encoder bias, with a
backward that skips what autograd would compute for it and nobody needs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .output import AutoencoderOutput


def _scatter_rows(index: torch.Tensor, rows: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """An n x d matrix whose row r is the sum of rows[m] over all m with index[m] == r.

    Sums in at least float32, whatever the (bf16) inputs.
    """
    acc = torch.promote_types(torch.promote_types(rows.dtype, dtype), torch.float32)
    out = torch.zeros(n, rows.shape[-1], dtype=acc, device=rows.device)
    out.index_add_(0, index.reshape(-1), rows.reshape(-1, rows.shape[-1]).to(acc))
    return out.to(dtype)


class CenteredLinear(torch.autograd.Function):
    """z = (h - c) W^T + b, the encoder of a model with a pre-encoder bias c (b_dec).

    Autograd of that expression computes the input's gradient dz W (a batch x in x code product) to
    reach c; written as h W^T + (b - W c) it instead adds a rank-one term to W's gradient (two extra
    passes over the code x in matrix: 2 of the 30 ms of a 784-1024 TopK step on one CPU thread). Here:
    dW = dz^T (h - c), db = sum_b dz, dc = -W^T db, and dh = dz W only when h needs a gradient.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, center):
        centered = h - center
        ctx.save_for_backward(centered, weight)
        return torch.addmm(bias, centered, weight.t())

    @staticmethod
    def backward(ctx, dz):
        centered, weight = ctx.saved_tensors
        need_h, need_w, need_b, need_c = ctx.needs_input_grad
        db = dz.sum(0) if need_b or need_c else None
        return (dz @ weight if need_h else None, dz.t() @ centered if need_w else None,
                db if need_b else None, -(db @ weight) if need_c else None)


def centered_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, center: torch.Tensor
                    ) -> torch.Tensor:
    return CenteredLinear.apply(h, weight, bias, center)


class SparseDecode(torch.autograd.Function):
    """out[b] = sum_j values[b, j] * weight[indices[b, j]]; weight is latents x features."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w = weight.to(values.dtype).contiguous()  # e.g. the transpose of nn.Linear's (out x in) weight
        ctx.save_for_backward(values, indices, w)
        ctx.weight_dtype = weight.dtype
        return F.embedding_bag(indices, w, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        values, indices, w = ctx.saved_tensors
        g = g.to(w.dtype)
        grad_values = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_values = torch.bmm(F.embedding(indices, w), g.unsqueeze(-1)).squeeze(-1)
        if ctx.needs_input_grad[2]:
            grad_weight = _scatter_rows(indices, values.unsqueeze(-1) * g.unsqueeze(1), w.shape[0],
                                        ctx.weight_dtype)
        return grad_values, None, grad_weight


class TopKEncode(torch.autograd.Function):
    """(values, indices) of relu(top-k of x @ weight.T + bias); weight is latents x features.

    The backward pass touches only the chosen latents' rows of `weight` and `bias`.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int):
        w = weight.to(x.dtype)
        pre = F.linear(x, w, bias.to(x.dtype))
        values, indices = pre.topk(k, dim=-1, sorted=False)
        values = torch.relu(values)
        ctx.save_for_backward(x, w, indices, values)
        ctx.dtypes = (weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, g_values: torch.Tensor, _g_indices):
        x, w, indices, values = ctx.saved_tensors
        dz = (g_values * (values > 0)).to(w.dtype)  # relu' at the chosen latents; zero elsewhere
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(indices, w, per_sample_weights=dz, mode="sum").to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _scatter_rows(indices, dz.unsqueeze(-1) * x.unsqueeze(1), w.shape[0], ctx.dtypes[0])
        if ctx.needs_input_grad[2]:
            grad_b = _scatter_rows(indices, dz.unsqueeze(-1), w.shape[0], ctx.dtypes[1]).squeeze(-1)
        return grad_x, grad_w, grad_b, None


def topk_encode(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    return TopKEncode.apply(x, weight, bias, k)


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return SparseDecode.apply(values, indices, weight)


def sparse_topk_forward(model, x: torch.Tensor) -> AutoencoderOutput:
    """`SparseAutoencoder.forward` of a training step through the sparse kernels (same outputs)."""
    target = model.input_transform(x)
    enc, dec = model.encoder[0], model.decoder[0]
    b_dec = dec.bias
    h = target - b_dec if model.config.pre_bias else target
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else h.dtype
    values, indices = topk_encode(h.to(dtype), enc.weight, enc.bias, model.config.k)
    recon = sparse_decode(values, indices, dec.weight.t()) + b_dec.to(dtype)
    n = enc.weight.shape[0]
    with torch.no_grad():  # which units fired, without a dense pass (and without a host sync)
        fired = torch.zeros(n + 1, dtype=torch.bool, device=x.device)
        fired.index_fill_(0, torch.where(values > model.active_threshold, indices, n).reshape(-1), True)
    # The dense code, for penalties and statistics; no gradient flows through it unless one is used.
    code = torch.zeros(x.shape[0], n, dtype=values.dtype, device=x.device).scatter_(1, indices, values)
    return AutoencoderOutput(recon, (code,), target, fired=fired[:n])
