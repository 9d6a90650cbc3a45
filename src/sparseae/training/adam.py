"""Adam on the CPU without torch._dynamo: the fused kernel of torch.optim.Adam(fused=True), called directly.

torch.optim.Optimizer imports torch._dynamo when its first parameter group is added and wraps every
step in dynamo's guards: about 1 s of a `sparseae train` process on one CPU thread, for a compiler a
CPU run never uses. `CpuAdam` runs the same kernel (`torch._fused_adam_`) on the same state, so its
steps are the same numbers as torch.optim.Adam(fused=True)'s (tests/test_adam.py, bit for bit), and its
state_dict has torch's layout, so a checkpoint written by either loads into the other.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from ..model.layout import storage_view


def available() -> bool:
    """Whether this torch has the fused CPU kernel (torch >= 2.4); otherwise torch.optim.Adam is used."""
    return callable(getattr(torch, "_fused_adam_", None))


def _torch_defaults() -> dict[str, Any]:
    """torch.optim.Adam's own defaults (its signature), so that param_groups has exactly its keys."""
    sig = inspect.signature(torch.optim.Adam.__init__)
    return {name: p.default for name, p in sig.parameters.items() if name not in ("self", "params")}


def _in_memory_order(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A parameter, its gradient and moments as contiguous views when all four share one permuted layout
    (the fused kernel copies a non-contiguous tensor in and out: +1.1 ms a step for a 784 x 1024 decoder
    stored code-major); Adam is elementwise, so the same numbers. Otherwise as they are."""
    if all(t.stride() == tensors[0].stride() for t in tensors[1:]):
        return tuple(storage_view(t) for t in tensors)
    return tensors


class CpuAdam:
    """Adam with torch.optim.Adam's interface as the training loop and the checkpoint use it:
    param_groups, state, step(), zero_grad(), state_dict(), load_state_dict(). One group, CPU tensors."""

    def __init__(self, params, lr: float):
        self.defaults = {**_torch_defaults(), "lr": lr, "fused": True}
        self.param_groups = [{**self.defaults, "params": list(params)}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:  # as torch's: created at a parameter's first gradient
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        tensors = [_in_memory_order(p, p.grad, s["exp_avg"], s["exp_avg_sq"]) for p, s in zip(params, states)]
        torch._fused_adam_(*(list(column) for column in zip(*tensors)), [], steps, amsgrad=False, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=False, grad_scale=None, found_inf=None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: state keyed by the parameter's index, param_groups with the indices."""
        params = self.param_groups[0]["params"]
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state},
                "param_groups": [{**group, "params": list(range(len(params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's: the step kept in float32, the moments cast to their parameter's dtype."""
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError("loaded state dict does not match the optimizer's parameters")
        self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
        self.state = {}
        for index, values in state_dict["state"].items():
            p = params[int(index)]
            # the moments in their parameter's memory layout (a code-major decoder: model.set_decoder_layout)
            self.state[p] = {k: v.to(torch.float32).clone() if k == "step" else torch.empty_like(p).copy_(v)
                             for k, v in values.items()}
