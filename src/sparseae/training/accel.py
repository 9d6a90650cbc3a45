"""Per-step speed on GPUs: precision, torch.compile, and one CUDA graph per step.

With the data on the device a small model's step is a few dozen tiny kernels
and the time goes into launching them from Python. Two remedies, both
optional (TrainConfig.compile, TrainConfig.cuda_graph):

- `torch.compile` fuses the forward pass and the loss into fewer kernels;
- a CUDA graph records the whole step (forward, backward, optimizer, the
  post-step hooks, the running loss sums) once and replays it with one
  launch; the batch is copied into a fixed input buffer first. A last,
  shorter batch runs eagerly.

Precision: 'fp32' (default: results equal to the CPU's within float
tolerance), 'tf32' (TensorFloat-32 matmuls on Ampere and later) or 'bf16'
(autocast of the forward pass; the loss is computed in float32).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable

import torch

from ..config import ModelConfig, SparsityConfig, TrainConfig, check_step_options
from ..errors import SparseAEError
from ..model import AutoencoderOutput
from ..model.collectives import ONE_PROCESS, Collectives

if TYPE_CHECKING:
    from ..objective import LossParts

Step = Callable[[torch.Tensor, torch.Tensor], None]


def set_matmul_precision(precision: str, device: torch.device) -> None:
    """TF32 only when asked for: it changes results at the 1e-3 relative level."""
    if device.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_float32(out: AutoencoderOutput) -> AutoencoderOutput:
    """The reconstruction loss in float32 even when the forward pass ran in bfloat16.

    Hidden layers stay as they are: the penalties cast the layers they use (objective.py), so a
    wide code (4096 x 65,536 for a TopK SAE, which needs no penalty) is not copied every step.
    """
    return out._replace(recon=out.recon.float(), target=out.target.float())


def check_device_options(cfg: TrainConfig, device: torch.device, distributed: bool) -> None:
    """What a CUDA graph needs of the machine: a CUDA device, one process. The rules that depend on
    the settings alone are RunConfig.validate's (config.check_step_options)."""
    if cfg.cuda_graph:
        if device.type != "cuda":
            raise SparseAEError("train.cuda_graph needs a CUDA device (device 'cuda')")
        if distributed:
            raise SparseAEError("train.cuda_graph cannot be used with data-parallel training")


def check_options(cfg: TrainConfig, model_cfg: ModelConfig, sparsity_cfg: SparsityConfig, device: torch.device,
                  distributed: bool) -> None:
    """Refuse combinations that cannot work: sparse kernels with AuxK; what a CUDA graph cannot record."""
    check_step_options(cfg, model_cfg, sparsity_cfg)
    check_device_options(cfg, device, distributed)


def forward_loss(model: torch.nn.Module, objective: Callable, precision: str, compile: bool,
                 device: torch.device, collectives: Collectives = ONE_PROCESS
                 ) -> Callable[[torch.Tensor], "LossParts"]:
    """xb -> LossParts: the forward pass (autocast in bf16) and the loss (float32)."""
    low = precision == "bf16"

    def run(xb: torch.Tensor):
        with autocast(precision, device):
            out = model(xb, collectives)
        return objective(model, as_float32(out) if low else out)

    return torch.compile(run) if compile else run


class GraphStep:
    """Replays one recorded CUDA graph of `step` for batches of `rows` rows; runs it eagerly otherwise.

    The graph is recorded at the first full batch. Recording needs a few warm-up
    steps (they allocate the optimizer state and the gradients); the model, its
    buffers, the optimizer state and the loss sums are put back afterwards, so
    training goes on from the same state as without a graph. The CUDA-specific
    parts are `_warm_up` and `_capture`; the rest is plain tensor bookkeeping
    (tested on the CPU with an eager stand-in for the graph).
    """

    def __init__(self, step: Step, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rows: int,
                 warmup: int = 3):
        self.step, self.model, self.optimizer, self.rows, self.warmup = step, model, optimizer, rows, warmup
        self.replay: Callable[[], None] | None = None

    def _warm_up(self, sums: torch.Tensor) -> None:
        """Run the step a few times on a side stream, as graph capture requires."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.step(self.x, sums)
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, sums: torch.Tensor) -> Callable[[], None]:
        """Record one step reading `self.x`; returns what replays it. Capture runs no kernels."""
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step(self.x, sums)
        return self.graph.replay

    def _record(self, example: torch.Tensor, sums: torch.Tensor) -> None:
        self.x, self.sums = example.clone(), sums
        prime = getattr(self.model, "prime", None)
        if prime is not None:  # the model's first-batch init is kept, not undone with the warm-up
            prime(self.x)
        state = [*self.model.parameters(), *self.model.buffers()]
        saved = [t.detach().clone() for t in state]
        saved_sums = sums.clone()
        saved_opt = {p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)}
                     for p, st in self.optimizer.state.items()}  # e.g. of a resumed run
        self._warm_up(sums)
        self.optimizer.zero_grad(set_to_none=True)
        self.replay = self._capture(sums)
        with torch.no_grad():  # in place: the recorded graph reads and writes these very tensors
            for t, s in zip(state, saved):
                t.copy_(s)
            for p, st in self.optimizer.state.items():
                for k, v in st.items():
                    if torch.is_tensor(v):  # as before; state the warm-up created: as fresh (zeros)
                        v.copy_(saved_opt[p][k]) if k in saved_opt.get(p, {}) else v.zero_()
            sums.copy_(saved_sums)

    def __call__(self, xb: torch.Tensor, sums: torch.Tensor) -> None:
        if xb.shape[0] != self.rows:
            self.step(xb, sums)
            return
        if self.replay is None:
            self._record(xb, sums)
        if sums is not self.sums:
            raise RuntimeError("GraphStep: the loss sums must stay the same tensor (zero it in place)")
        self.x.copy_(xb)
        self.replay()
