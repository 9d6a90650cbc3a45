"""The CPU Adam (training/adam.py): torch.optim.Adam(fused=True)'s numbers and state layout, no torch._dynamo."""
import subprocess
import sys

import pytest
import torch

from sparseae.training import adam

pytestmark = pytest.mark.skipif(not adam.available(), reason="this torch has no fused CPU Adam kernel")


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(3, generator=g))]


def _grads(step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(5, 3, generator=g), torch.randn(3, generator=g)]


def _run(opt, params, steps, lrs=None):
    for t in range(steps):
        for p, gr in zip(params, _grads(t)):
            p.grad = gr.clone()
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[t]
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_steps_equal_torch_fused_adam_bit_for_bit():
    mine, ref = _params(), _params()
    lrs = [1e-2 * (1 - t / 12) for t in range(12)]  # a decaying rate, set per step as the loop does
    _run(adam.CpuAdam(mine, lr=1e-2), mine, 12, lrs)
    _run(torch.optim.Adam(ref, lr=1e-2, fused=True), ref, 12, lrs)
    for a, b in zip(mine, ref):
        assert torch.equal(a, b)


def test_state_dict_has_torchs_layout_and_loads_both_ways():
    mine, ref = _params(), _params()
    ours, theirs = adam.CpuAdam(mine, lr=1e-3), torch.optim.Adam(ref, lr=1e-3, fused=True)
    _run(ours, mine, 3)
    _run(theirs, ref, 3)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k]) and a["state"][i][k].dtype == b["state"][i][k].dtype
    # torch's state continued by ours (a checkpoint from an older sparseae) and ours by torch's
    cont_mine, cont_ref = [p.detach().clone().requires_grad_() for p in mine], [p.detach().clone().requires_grad_()
                                                                                  for p in ref]
    o2, t2 = adam.CpuAdam(cont_mine, lr=1e-3), torch.optim.Adam(cont_ref, lr=1e-3, fused=True)
    o2.load_state_dict(theirs.state_dict())
    t2.load_state_dict(ours.state_dict())
    _run(o2, cont_mine, 2)
    _run(t2, cont_ref, 2)
    for x, y in zip(cont_mine, cont_ref):
        assert torch.equal(x, y)


def test_parameter_without_gradient_gets_no_state():
    params = _params()
    opt = adam.CpuAdam(params, lr=1e-3)
    params[0].grad = torch.ones(5, 3)
    before = params[1].detach().clone()
    opt.step()
    assert list(opt.state_dict()["state"]) == [0] and torch.equal(params[1], before)


def test_load_refuses_another_models_state():
    opt = adam.CpuAdam(_params(), lr=1e-3)
    other = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, fused=True)
    with pytest.raises(ValueError):
        opt.load_state_dict(other.state_dict())


def test_a_cpu_training_run_never_imports_torch_dynamo(tmp_path):
    code = ("import sys, torch\n"
            "from sparseae.config import TrainConfig\n"
            "from sparseae.training.loop import make_optimizer\n"
            "p = torch.nn.Parameter(torch.zeros(3))\n"
            "opt = make_optimizer([p], TrainConfig(lr=1e-3).resolved(), torch.device('cpu'))\n"
            "p.grad = torch.ones(3); opt.step(); opt.zero_grad()\n"
            "print('torch._dynamo' in sys.modules, type(opt).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "CpuAdam"]
