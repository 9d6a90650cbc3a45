"""Data-parallel training across processes (torchrun), with exact global statistics.

Every process draws the same shuffled order (same seed) and keeps its share of
each global batch. Each process weights its loss by its share of the batch's
rows, n_r / N, and the gradients are summed across processes, so the summed
gradient is exactly the gradient of the loss on the whole global batch:

- per-example means (reconstruction, L1) become global means;
- the KL penalty's rho_hat is the global mean activation, sum_r sum_rows h / N,
  computed by an all-reduce whose backward is again an all-reduce (the adjoint
  of a sum over processes is a sum over processes), so the gradient reaching
  each process's activations is the one of the global rho_hat;
- weight decay, identical on every process, is counted once in total;
- BatchTopK keeps the k * N largest activations of the global batch (one
  all-gather of each process's candidates);
- the firing counters behind AuxK's dead units count the global batch (a unit
  fired if it fired on any process), and AuxK's sums run over all processes.

Only rank 0 writes files. The backend is gloo on CPU and NCCL on GPUs.
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
import torch
import torch.distributed as dist

from ..errors import SparseAEError
from ..model.layout import storage_view


class AllReduceSum(torch.autograd.Function):
    """Sum of a tensor over processes; its gradient is the sum of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.contiguous().clone()
        dist.all_reduce(g)
        return g


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return AllReduceSum.apply(x)


class DataParallel:
    """This process's place in a data-parallel run: rank, world size, and the collectives
    (the `Collectives` of model/collectives.py, over torch.distributed)."""

    def __init__(self, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        self.global_rows = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, xb: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch."""
        self.global_rows = xb.shape[0]
        if xb.shape[0] < self.world:
            raise SparseAEError(f"a batch of {xb.shape[0]} rows cannot be split over {self.world} processes; "
                                "choose a batch size (and data size) that gives every process rows")
        return xb.tensor_split(self.world)[self.rank]

    def loss_weight(self, local_rows: int) -> float:
        return local_rows / self.global_rows

    def total(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable sum over processes."""
        return all_reduce_sum(x)

    def mean_activation(self, h: torch.Tensor) -> torch.Tensor:
        """rho_hat over the global batch: sum over processes and rows / global rows."""
        return all_reduce_sum(h.sum(0)) / self.global_rows

    def batchtopk(self, z: torch.Tensor, k: int, act) -> tuple[torch.Tensor, torch.Tensor]:
        """BatchTopK over the global batch: keep the k * N largest activations of all processes.

        Each process offers its own k * N largest values, the global threshold is the
        (k * N)-th largest of all offers, and each process keeps its values at or above
        it; the gradient flows through the kept values, as in topk.batchtopk_activation.
        """
        a = act(z)
        n_keep = min(k * self.global_rows, self.global_rows * a.shape[1])
        with torch.no_grad():
            local = a.detach().flatten()
            offer = local.topk(min(n_keep, local.numel()), sorted=False).values
            offer = torch.cat([offer, offer.new_full((n_keep - offer.numel(),), float("-inf"))])
            offers = [torch.empty_like(offer) for _ in range(self.world)]
            dist.all_gather(offers, offer)
            kept = torch.cat(offers).topk(n_keep, sorted=False).values
            positive = kept[kept > 0]
            smallest = positive.min() if positive.numel() else kept.new_zeros(())
        return a * (a >= kept.min()), smallest

    @torch.no_grad()
    def firing(self, fired: torch.Tensor, rows: int) -> tuple[torch.Tensor, int]:
        """Units that fired on any process, and the global batch's rows (AuxK's dead units agree)."""
        t = fired.to(torch.uint8)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.bool(), self.global_rows

    @torch.no_grad()
    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        i = 0
        for p, g in zip(params, grads):
            n = g.numel()
            if p.grad is None:
                p.grad = flat[i:i + n].view_as(p).clone()
            else:
                p.grad.copy_(flat[i:i + n].view_as(p))
            i += n

    @torch.no_grad()
    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        for t in tensors:
            dist.broadcast(storage_view(t), 0)  # collectives need contiguous memory (a code-major decoder)

    @torch.no_grad()
    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t)
        return t

    def agree(self, flag: bool) -> bool:
        """Rank 0's value of a decision (stop early or not), on every process."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())


def _shutdown() -> None:
    if dist.is_initialized():
        try:  # bounded wait: a rank that died must not hang the others at exit
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            else:
                dist.barrier()
        except RuntimeError:
            pass
        finally:
            dist.destroy_process_group()


def from_environment(device: torch.device) -> DataParallel | None:
    """The data-parallel context when started by torchrun (WORLD_SIZE > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        # Tear the group down before the interpreter exits: a process leaving with gloo's threads
        # still running aborts ("terminate called without an active exception"). The barrier
        # keeps one rank from closing while another is still talking to it.
        atexit.register(_shutdown)
    return DataParallel(dist.get_rank(), dist.get_world_size(), device)
