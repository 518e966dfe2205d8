"""Train theta so that a few descent steps through it solve the inversion (Liu et al. 2023).

Each iteration unrolls ``unroll`` steps of z <- z - lr * grad_z L(F(theta(z)), y) from a
batch of starting points and minimizes the sum of the losses over all steps, backpropagating
through the unrolled steps into theta. Starting points are half fresh initializations and
half points that earlier trajectories visited (a replay buffer), so theta is trained where
descent actually goes, not only at the initialization.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .buffer import ReplayBuffer
from .descent import descend
from .io import atomic_write, load_tensors
from .problem import InversionProblem, target_cat, target_to
from .theta import Theta


class CheckpointError(RuntimeError):
    pass


@dataclass
class TrainConfig:
    iterations: int = 1000
    batch_size: int = 64
    unroll: int = 10              # T: steps unrolled per training iteration
    lr_z: float = 0.1             # step size of descent in Z (fixed; theta learns a landscape for it)
    rule: str = "sgd"
    theta_lr: float = 1e-3
    z_dim: int | None = None
    width: int = 256
    depth: int = 2
    skip: str = "linear"          # "identity": fixed identity skip (needs z_dim = dim X), no dim_x² matrix
    buffer_size: int = 4096
    buffer_fraction: float = 0.5  # share of each batch drawn from the buffer once it has points
    collect_every: int = 10       # iterations between trajectory collections
    collect_steps: int = 20       # steps of each collected trajectory (longer than the unroll)
    grad_clip: float = 10.0
    checkpoint_every: int = 100
    seed: int = 0
    extra: dict = field(default_factory=dict)  # task settings recorded with the checkpoint

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown theta training keys {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    def validate(self) -> None:
        for key in ("iterations", "batch_size", "unroll", "buffer_size", "collect_every", "collect_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"theta training: {key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.buffer_fraction <= 1:
            raise ValueError(f"buffer_fraction must lie in [0, 1], got {self.buffer_fraction}")


def z_init(theta: Theta, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Starting points in Z: standard normal (theta maps them into X)."""
    return torch.randn(n, theta.z_dim, generator=generator).to(device or "cpu")


class ThetaTrainer:
    """Trains a :class:`Theta` for any :class:`InversionProblem`; checkpoints hold everything to resume."""

    def __init__(self, problem: InversionProblem, cfg: TrainConfig, device="cpu"):
        cfg.validate()
        self.problem, self.cfg, self.device = problem, cfg, torch.device(device)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.theta = Theta(problem.latent_shape, cfg.z_dim, cfg.width, cfg.depth, cfg.skip).to(self.device)
        self.opt = torch.optim.Adam(self.theta.parameters(), lr=cfg.theta_lr)
        self.buffer = ReplayBuffer(cfg.buffer_size)
        self.iteration = 0
        self.elapsed = 0.0
        self.history: list[dict] = []

    # -- one piece at a time -------------------------------------------------------------
    def objective_for(self, target):
        return lambda x: self.problem.objective(x, target)

    def collect(self) -> None:
        """Run a trajectory through the current theta and keep the points it visits."""
        cfg = self.cfg
        target = target_to(self.problem.sample_targets(cfg.batch_size, self.gen), self.device)
        z0 = z_init(self.theta, cfg.batch_size, self.gen, self.device)
        res = descend(self.objective_for(target), z0, cfg.collect_steps, cfg.lr_z, cfg.rule, theta=self.theta,
                      keep_trajectory=True)
        for z in res.trajectory[1:]:
            self.buffer.push(z, target)

    def training_batch(self):
        cfg = self.cfg
        n_buf = int(round(cfg.batch_size * cfg.buffer_fraction)) if len(self.buffer) else 0
        n_new = cfg.batch_size - n_buf
        zs, targets = [], []
        if n_new:
            targets.append(self.problem.sample_targets(n_new, self.gen))
            zs.append(z_init(self.theta, n_new, self.gen))
        if n_buf:
            z, t = self.buffer.sample(n_buf, self.gen)
            zs.append(z)
            targets.append(t)
        return torch.cat(zs).to(self.device), target_to(target_cat(targets), self.device)

    def unrolled_loss(self, z0: torch.Tensor, target) -> torch.Tensor:
        """Mean over the batch of the sum over steps of the loss, differentiable w.r.t. theta."""
        res = descend(self.objective_for(target), z0, self.cfg.unroll, self.cfg.lr_z, self.cfg.rule,
                      theta=self.theta, differentiable=True)
        return res.losses.sum(0).mean()

    def step(self) -> float:
        if self.iteration % self.cfg.collect_every == 0:
            self.collect()
        z0, target = self.training_batch()
        loss = self.unrolled_loss(z0, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"unrolled loss is {loss.item()} at iteration {self.iteration}; lower lr_z")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.theta.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.iteration += 1
        return loss.item() / (self.cfg.unroll + 1)

    # -- the loop ------------------------------------------------------------------------
    def train(self, checkpoint: str | Path | None = None, progress: bool = True) -> list[dict]:
        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, desc="theta", disable=not progress)
        while self.iteration < self.cfg.iterations:
            t0 = time.perf_counter()
            loss = self.step()
            self.elapsed += time.perf_counter() - t0
            self.history.append({"iteration": self.iteration, "loss": loss})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", buffer=len(self.buffer))
            if checkpoint and (self.iteration % self.cfg.checkpoint_every == 0 or self.iteration == self.cfg.iterations):
                self.save(checkpoint)
        bar.close()
        return self.history

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self, with_buffer: bool = True) -> dict:
        state = {"theta": self.theta.state_dict(), "theta_config": self.theta.config(), "train_config": asdict(self.cfg),
                 "iteration": self.iteration, "elapsed_s": self.elapsed, "history": self.history}
        if with_buffer:
            state.update(optimizer=self.opt.state_dict(), buffer=self.buffer.state_dict(),
                         rng=self.gen.get_state(), torch_rng=torch.get_rng_state())
        return state

    def save(self, path: str | Path, with_buffer: bool = True) -> None:
        state = self.state_dict(with_buffer)
        atomic_write(path, lambda p: torch.save(state, p))

    def resume(self, path: str | Path) -> None:
        state = load_checkpoint(path)
        saved = state["train_config"]
        mine = asdict(self.cfg)
        differs = {k for k in mine if k not in ("iterations", "checkpoint_every") and saved.get(k) != mine[k]}
        if differs:
            raise CheckpointError(f"checkpoint {path} was trained with a different config ({', '.join(sorted(differs))}); "
                                  f"start a new checkpoint or use the same settings")
        self.theta.load_state_dict(state["theta"])
        self.iteration, self.elapsed, self.history = int(state["iteration"]), float(state["elapsed_s"]), list(state["history"])
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
            self.buffer.load_state_dict(state["buffer"])
            self.gen.set_state(state["rng"])
            torch.set_rng_state(state["torch_rng"])


def load_checkpoint(path: str | Path) -> dict:
    return load_tensors(path, CheckpointError, "theta checkpoint", "train one with `landscape train-theta`")


def load_theta(path: str | Path, device="cpu") -> tuple[Theta, dict]:
    """theta in eval mode (parameters frozen) and the training config it was saved with."""
    state = load_checkpoint(path)
    tc = state["theta_config"]
    theta = Theta(tuple(tc["x_shape"]), tc["z_dim"], tc["width"], tc["depth"], tc.get("skip", "linear"))
    theta.load_state_dict(state["theta"])
    for p in theta.parameters():
        p.requires_grad_(False)
    return theta.to(device).eval(), state["train_config"]
