"""SGD and Adam for every training loop: PyTorch's own fused update functions (`torch.optim.sgd.sgd`,
`torch.optim.adam.adam`, the functions `torch.optim.SGD` and `Adam` call) behind the part of the optimiser
interface the loops use: `param_groups[i]["lr"]`, `state[p]`, `zero_grad`, `step`.

Why not the classes themselves: building one imports torch._dynamo (`Optimizer.add_param_group` is wrapped in
`torch._disable_dynamo`), 1.1–1.6 s on a CPU core, and every job pays it once; a sweep that runs one job per
dimension pays it per dimension. The update is the same call with the same arguments and the same state
(a test checks each against its class, step for step). Fused: one kernel per step updates every parameter
(PyTorch's default issues one per arithmetic op, each a pass over all parameters and state).

`adam_constant_correction` is the subspace optimiser of Larsen et al. 2022's released code
(ganguli-lab/degrees-of-freedom, burn_in_subspace.py and lottery_subspace.py): Adam's moments with the "bias
corrections" m/(1−β1) and v/(1−β2) constant rather than 1/(1−β^t), and ε = 1e-7 added to √v̂. At the same lr
its step is √(1−β2)/(1−β1) · (1−β1^t)/√(1−β2^t) times PyTorch Adam's: 1 at step 1, 2.1 at step 10, 0.52 at step
469, → 0.316 once the moments have warmed up. No lr makes the two agree: PyTorch Adam at 0.316 lr steps 3.16x,
6.5x, 1.6x less at steps 1, 10, 469.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

KINDS = ("sgd", "adam", "adam_constant_correction")  # the config schema's train.optimizer and subspace.optimizer
CONSTANT_CORRECTION_EPS = 1e-7  # the released code's epsilon (PyTorch Adam's default is 1e-8)


class Optimizer:
    """One parameter group trained by `kind`; state is created on the first step, as the classes do."""

    def __init__(self, kind: str, params: Iterable[torch.Tensor], *, lr: float, momentum: float = 0.0,
                 nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if kind not in KINDS:
            raise ValueError(f"optimizer {kind!r} is not one of {KINDS}")
        self.kind = kind
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.momentum, self.nesterov, self.betas, self.eps, self.weight_decay = (
            momentum, nesterov, tuple(betas), eps, weight_decay)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {p: {} for p in self.params}

    @classmethod
    def of(cls, spec, params: Iterable[torch.Tensor]) -> "Optimizer":
        """The optimiser a config spec names: train (TrainSpec) or a subspace run's (SubspaceTrain, which has
        no Nesterov or weight decay: the defaults)."""
        return cls(spec.optimizer, params, lr=spec.lr, momentum=spec.momentum,
                   nesterov=getattr(spec, "nesterov", False), betas=getattr(spec, "betas", (0.9, 0.999)),
                   weight_decay=getattr(spec, "weight_decay", 0.0))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        lr = self.param_groups[0]["lr"]
        if self.kind == "sgd":
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd(params, grads, buffers, fused=True, weight_decay=self.weight_decay, momentum=self.momentum,
                lr=lr, dampening=0.0, nesterov=self.nesterov, maximize=False)
            if self.momentum != 0:
                for p, b in zip(params, buffers, strict=True):
                    self.state[p]["momentum_buffer"] = b
            return
        for p in params:
            if not self.state[p]:  # float32 step on the parameter's device: what the fused class keeps
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        st = [self.state[p] for p in params]
        if self.kind == "adam_constant_correction":
            self._constant_correction_step(params, grads, st, lr)
            return
        adam(params, grads, [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st], [], [s["step"] for s in st],
             fused=True, amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=lr,
             weight_decay=self.weight_decay, eps=self.eps, maximize=False)

    def _constant_correction_step(self, params, grads, states, lr: float) -> None:
        """m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², θ ← θ − lr · (m/(1−β1)) / (√(v/(1−β2)) + 1e-7)."""
        b1, b2 = self.betas
        for p, g, s in zip(params, grads, states, strict=True):
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            s["step"] += 1
            s["exp_avg"].lerp_(g, 1 - b1)
            s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (s["exp_avg_sq"] / (1 - b2)).sqrt_().add_(CONSTANT_CORRECTION_EPS)
            p.addcdiv_(s["exp_avg"], denom, value=-lr / (1 - b1))
