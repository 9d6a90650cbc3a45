"""Sparse TopK kernels against a dense float32/float64 reference: forward values and every gradient."""
import pytest
import torch

from sparseae import SparseAEError
from sparseae.config import ModelConfig, RunConfig, SparsityConfig
from sparseae.model.kernels import sparse_decode, topk_encode
from sparseae.model import SparseAutoencoder
from sparseae.objective import Objective


def _dense_reference(x, w_enc, b_enc, w_dec, b_dec, k):
    """Plain PyTorch: dense pre-activations, top-k mask, dense decoder product."""
    pre = x @ w_enc.T + b_enc
    idx = pre.topk(k, dim=-1).indices
    code = torch.zeros_like(pre).scatter(-1, idx, torch.relu(pre.gather(-1, idx)))
    return code @ w_dec + b_dec, code


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_forward_and_gradients_match_dense(dtype, tol):
    g = torch.Generator().manual_seed(0)
    b, d, n, k = 9, 7, 40, 5
    x = torch.randn(b, d, generator=g, dtype=dtype, requires_grad=True)
    params = [torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, generator=g, dtype=dtype),
              torch.randn(n, d, generator=g, dtype=dtype), torch.randn(d, generator=g, dtype=dtype)]
    params = [p.requires_grad_() for p in params]
    w_enc, b_enc, w_dec, b_dec = params
    upstream = torch.randn(b, d, generator=g, dtype=dtype)

    ref_out, ref_code = _dense_reference(x, w_enc, b_enc, w_dec, b_dec, k)
    ref_grads = torch.autograd.grad((ref_out * upstream).sum(), [x, *params])

    vals, idx = topk_encode(x, w_enc, b_enc, k)
    out = sparse_decode(vals, idx, w_dec) + b_dec
    code = torch.zeros(b, n, dtype=dtype).scatter(1, idx, vals)
    grads = torch.autograd.grad((out * upstream).sum(), [x, *params])

    torch.testing.assert_close(code, ref_code, rtol=tol, atol=tol)
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    for name, a, r in zip(["x", "w_enc", "b_enc", "w_dec", "b_dec"], grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=tol, atol=tol, msg=name)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(12, generator=g, dtype=torch.float64, requires_grad=True)
    wd = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x, w, bias, wd):
        vals, idx = topk_encode(x, w, bias, 3)
        return sparse_decode(vals, idx, wd)

    assert torch.autograd.gradcheck(f, (x, w, bias, wd), eps=1e-6, atol=1e-6)


def _models(pre_bias):
    cfg = dict(input_dim=6, hidden=[30], activation="relu", output_activation="linear", topk="topk", k=4,
               unit_norm_decoder=True, pre_bias=pre_bias, input_transform="standardize")
    torch.manual_seed(0)
    dense = SparseAutoencoder(ModelConfig(**cfg))
    sparse = SparseAutoencoder(ModelConfig(**cfg, topk_kernel="sparse"))
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


@pytest.mark.parametrize("pre_bias", [False, True])
def test_model_sparse_path_equals_dense_path(pre_bias):
    dense, sparse = _models(pre_bias)
    x = torch.randn(11, 6) * 3 + 1
    b_dec = torch.randn(6)
    for m in (dense, sparse):
        m.input_transform.fit(x)
        with torch.no_grad():
            m.decoder[0].bias.copy_(b_dec)
    objective = Objective(SparsityConfig(penalty="topk"))
    outs = []
    for m in (dense, sparse):
        m.train()
        out = m(x)
        objective(m, out).total.backward()
        outs.append(out)
    torch.testing.assert_close(outs[1].recon, outs[0].recon, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[1].hidden[-1], outs[0].hidden[-1], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(sparse.examples_since_fired, dense.examples_since_fired)


def test_bf16_autocast_is_close_to_float32():
    dense, sparse = _models(True)
    x = torch.randn(64, 6)
    for m in (dense, sparse):
        m.input_transform.fit(x)
    ref = dense(x).recon
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse(x).recon
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).norm() / ref.norm() < 3e-2


def test_sparse_kernel_needs_a_single_relu_topk_layer():
    with pytest.raises(SparseAEError, match="topk_kernel"):
        ModelConfig(hidden=[30], topk_kernel="sparse").validate()
    with pytest.raises(SparseAEError, match="relu"):
        ModelConfig(hidden=[30], topk="topk", k=3, activation="sigmoid", topk_kernel="sparse").validate()
    cfg = RunConfig.from_dict({"model": {"hidden": [30], "topk": "topk", "k": 3, "activation": "relu",
                                         "output_activation": "linear", "topk_kernel": "sparse"},
                           "sparsity": {"penalty": "topk"}})
    cfg.validate()


def test_centered_linear_values_and_gradients():
    """(h - c) W^T + b and its four gradients, against autograd of the plain expression (float64), and
    torch's gradcheck; an input that needs no gradient gets none computed."""
    from sparseae.model.kernels import centered_linear

    g = torch.Generator().manual_seed(0)
    h, w, b, c = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
                  for s in ((7, 5), (4, 5), (4,), (5,)))
    dz = torch.randn(7, 4, generator=g, dtype=torch.float64)
    got = centered_linear(h, w, b, c)
    ref = (h - c) @ w.t() + b
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(got, (h, w, b, c), dz)
    for a, r in zip(grads, torch.autograd.grad(ref, (h, w, b, c), dz)):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(centered_linear, (h, w, b, c))
    x = h.detach()
    out = centered_linear(x, w, b, c)
    assert out.grad_fn is not None and torch.autograd.grad(out.sum(), (w,))[0].shape == w.shape


@pytest.mark.parametrize("pre_bias", [True, False])
def test_cpu_gather_decoder_equals_the_dense_product(pre_bias):
    """Training forward of a one-layer TopK model on the CPU decodes by gathering the k chosen decoder
    columns: the reconstruction and every parameter gradient equal the dense product's (float64)."""
    torch.manual_seed(0)
    cfg = ModelConfig(input_dim=12, hidden=[20], activation="relu", output_activation="linear", topk="topk", k=3,
                      unit_norm_decoder=True, pre_bias=pre_bias, bias_init="default")
    model = SparseAutoencoder(cfg).double().train()
    x = torch.randn(9, 12, dtype=torch.float64)
    results = []
    for gather in (True, False):
        model._gather_ok = gather
        model.zero_grad(set_to_none=True)
        out = model(x)
        ((out.recon - out.target) ** 2).sum().backward()
        results.append((out.recon.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (r1, g1), (r2, g2) = results
    torch.testing.assert_close(r1, r2, rtol=0, atol=1e-12)
    for n in g2:
        torch.testing.assert_close(g1[n], g2[n], rtol=0, atol=1e-12, msg=n)
