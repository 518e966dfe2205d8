"""Train theta so that a few descent steps through it solve the inversion (Liu et al. 2023).

Two methods, one trainer (``TrainConfig.method``):

* ``unrolled``: each iteration unrolls ``unroll`` steps of z <- z - lr * grad_z L(F(theta(z)), y)
  from a batch of starting points and minimizes the sum of the losses over all steps,
  backpropagating through the unrolled steps into theta. Starting points are half fresh
  initializations and half points that earlier trajectories visited (a replay buffer).
* ``coordinate`` (the paper's own algorithm, as its summaries describe it: coordinate descent
  with experience replay): every ``collect_every`` iterations, descend ``collect_steps`` steps in
  Z through the current, frozen theta for ``collect_batch`` training targets and push every
  visited z with its target into the buffer; each iteration then updates theta (AdamW) on
  ``batch_size`` buffered (z, target) pairs so that L(F(theta(z)), y) is low at all of them.
  Points of high loss give large gradients, so theta learns to shorten the whole path; nothing is
  differentiated through the steps, which is what lets sign and Adam steps train theta too.

Every ``eval_every`` iterations the trainer measures the held-out loss after ``eval_budget``
steps in Z (fixed starts, the training rule and step size): the learning curve in ``history``.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .buffer import ReplayBuffer
from .errors import first_line
from .io import CheckpointError, atomic_write, load_tensors, resolve_path
from .problem import InversionProblem, target_cat, target_len, target_to
from .space import Space
from .theta import Theta, ThetaError

__all__ = ["CheckpointError", "ThetaTrainer", "TrainConfig", "load_theta", "load_checkpoint"]


METHODS = ("unrolled", "coordinate")


@dataclass
class TrainConfig:
    method: str = "unrolled"      # unrolled | coordinate (see the module docstring)
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
    activation: str = "gelu"      # of theta's residual blocks: gelu | relu | silu | tanh
    condition: bool = False       # theta(z, c) sees problem.condition(target) (beyond the paper; needs the task's condition)
    shift_only: bool = False      # with condition: theta(z, c) = skip(z) + g(c), X's landscape from a learned centre
    residual_bound: float = 0.0   # > 0: theta's residual is b tanh(r / b), at most b per coordinate (0: unbounded)
    weight_decay: float = 0.0     # AdamW's, for the coordinate method (the unrolled one uses Adam)
    collect_batch: int = 64       # coordinate: targets per collected trajectory batch
    buffer_size: int = 4096
    buffer_fraction: float = 0.5  # share of each batch drawn from the buffer once it has points
    collect_every: int = 10       # iterations between trajectory collections
    collect_steps: int = 20       # steps of each collected trajectory (longer than the unroll)
    grad_clip: float = 10.0
    checkpoint_every: int = 100
    eval_every: int = 0           # iterations between held-out evaluations (0: none)
    eval_budget: int = 10         # K of the held-out evaluation
    eval_n: int = 64              # held-out targets of the evaluation
    seed: int = 0
    init: str | None = None       # a trained theta's file to start from instead of the identity (fine-tuning;
    #                               same architecture; a resumed run keeps its own weights)
    extra: dict = field(default_factory=dict)  # task settings recorded with the checkpoint

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ThetaError(f"unknown theta training keys {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ThetaError(f"unknown theta training method {self.method!r}; valid: {', '.join(METHODS)}")
        for key in ("iterations", "batch_size", "unroll", "buffer_size", "collect_every", "collect_steps",
                    "collect_batch", "eval_n"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ThetaError(f"theta training: {key} must be a whole number >= 1, got {value!r}")
        for key in ("eval_every", "eval_budget"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ThetaError(f"theta training: {key} must be a whole number >= 0, got {getattr(self, key)!r}")
        if self.shift_only and not self.condition:
            raise ThetaError("theta.shift_only=true needs theta.condition=true (its residual sees only the condition)")
        if isinstance(self.residual_bound, bool) or not isinstance(self.residual_bound, (int, float)) \
                or not (self.residual_bound >= 0 and math.isfinite(self.residual_bound)):
            raise ThetaError(f"theta.residual_bound must be a finite number >= 0 (0: unbounded), got {self.residual_bound!r}")
        if not 0 <= self.buffer_fraction <= 1:
            raise ThetaError(f"buffer_fraction must lie in [0, 1], got {self.buffer_fraction}")


class ThetaTrainer:
    """Trains a :class:`Theta` for any :class:`InversionProblem`; checkpoints hold everything to resume."""

    def __init__(self, problem: InversionProblem, cfg: TrainConfig, device="cpu"):
        cfg.validate()
        self.cfg, self.device = cfg, torch.device(device)
        self.problem = problem.to(self.device)  # theta and the forward model on the same device
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        cond_dim = 0
        if cfg.condition:
            if not problem.has_condition:
                raise ThetaError(f"theta.condition=true needs a problem with a condition(target); "
                                 f"{type(problem).__name__} has none")
            probe = target_to(problem.sample_targets(1, torch.Generator().manual_seed(cfg.seed)), self.device)
            cond_dim = int(problem.condition(probe).shape[1])
        self.theta = Theta(problem.latent_shape, cfg.z_dim, cfg.width, cfg.depth, cfg.skip,
                           cfg.activation, cond_dim, cfg.shift_only, cfg.residual_bound).to(self.device)
        if cfg.init:
            self._start_from(cfg.init)
        self.space = Space(self.problem, self.theta)
        if cfg.method == "coordinate":
            self.opt = torch.optim.AdamW(self.theta.parameters(), lr=cfg.theta_lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.Adam(self.theta.parameters(), lr=cfg.theta_lr)
        self.buffer = ReplayBuffer(cfg.buffer_size)
        self.iteration = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.last_eval: float | None = None   # the latest held-out loss, for the progress bar

    def _start_from(self, path) -> None:
        """Load a trained theta's weights (``theta.init``): this run fine-tunes it with its own method."""
        trained, _ = load_theta(resolve_path(path))
        mine = {k: v.shape for k, v in self.theta.state_dict().items()}
        theirs = {k: v.shape for k, v in trained.state_dict().items()}
        if mine != theirs:
            raise ThetaError(f"theta.init {path}: its architecture differs from this run's theta (width, depth, z_dim, "
                             f"condition, skip must match those it was trained with)")
        self.theta.load_state_dict({k: v.to(self.device) for k, v in trained.state_dict().items()})

    # -- one piece at a time -------------------------------------------------------------
    @contextmanager
    def frozen(self):
        """theta without parameter gradients, for descents that only move z (collection, evaluation)."""
        self.theta.requires_grad_(False)
        try:
            yield
        finally:
            self.theta.requires_grad_(True)

    def collect(self) -> None:
        """Run a trajectory through the current theta and keep the points it visits."""
        cfg = self.cfg
        n = cfg.collect_batch if cfg.method == "coordinate" else cfg.batch_size
        target = target_to(self.problem.sample_targets(n, self.gen), self.device)
        z0 = self.space.init(n, self.gen, self.device)
        with self.frozen():
            res = self.space.descend(target, z0, cfg.collect_steps, cfg.lr_z, cfg.rule, keep_trajectory=True)
        # the coordinate method learns from the start too; the unrolled one starts fresh points itself
        for z in res.trajectory[0 if cfg.method == "coordinate" else 1:]:
            self.buffer.push(z, target)

    def training_batch(self):
        cfg = self.cfg
        n_buf = int(round(cfg.batch_size * cfg.buffer_fraction)) if len(self.buffer) else 0
        n_new = cfg.batch_size - n_buf
        zs, targets = [], []
        if n_new:
            targets.append(self.problem.sample_targets(n_new, self.gen))
            zs.append(self.space.init(n_new, self.gen, "cpu"))
        if n_buf:
            z, t = self.buffer.sample(n_buf, self.gen)
            zs.append(z)
            targets.append(t)
        return torch.cat(zs).to(self.device), target_to(target_cat(targets), self.device)

    def unrolled_loss(self, z0: torch.Tensor, target) -> torch.Tensor:
        """Mean over the batch of the sum over steps of the loss, differentiable w.r.t. theta."""
        res = self.space.descend(target, z0, self.cfg.unroll, self.cfg.lr_z, self.cfg.rule, differentiable=True)
        return res.losses.sum(0).mean()

    def coordinate_loss(self) -> torch.Tensor:
        """Mean loss of theta at buffered points (each with its own target), differentiable w.r.t. theta."""
        z, target = self.buffer.sample(self.cfg.batch_size, self.gen)
        z, target = z.to(self.device), target_to(target, self.device)
        return self.problem.objective(self.space.to_x(z, target), target).mean()

    def step(self) -> float:
        if self.iteration % self.cfg.collect_every == 0:
            self.collect()
        if self.cfg.method == "coordinate":
            loss = self.coordinate_loss()
            scale = 1.0
        else:
            z0, target = self.training_batch()
            loss = self.unrolled_loss(z0, target)
            scale = self.cfg.unroll + 1
        if not torch.isfinite(loss):
            raise FloatingPointError(f"unrolled loss is {loss.item()} at iteration {self.iteration}; lower lr_z")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.theta.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.iteration += 1
        return loss.item() / scale

    def heldout_loss(self) -> float:
        """Mean held-out loss after ``eval_budget`` steps in Z: the same starts, and the same draws of
        any randomness inside the objective (e.g. augmentations), every time; the training's own
        random stream is left as it was, so evaluating does not change what is trained."""
        cfg = self.cfg
        target = target_to(self.problem.heldout(cfg.eval_n), self.device)
        z0 = self.space.init(target_len(target), torch.Generator().manual_seed(cfg.seed + 12345), self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with self.frozen(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed + 54321)
            res = self.space.descend(target, z0, cfg.eval_budget, cfg.lr_z, cfg.rule)
        return float(res.losses[-1].mean())

    # -- the loop ------------------------------------------------------------------------
    def train(self, checkpoint: str | Path | None = None, progress: bool = True,
              seconds: float | None = None) -> list[dict]:
        """Train to ``cfg.iterations`` (or until ``seconds`` of training time, counting earlier runs, have passed)."""
        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, desc="theta", disable=not progress)
        while self.iteration < self.cfg.iterations and (seconds is None or self.elapsed < seconds):
            t0 = time.perf_counter()
            loss = self.step()
            self.elapsed += time.perf_counter() - t0
            record = {"iteration": self.iteration, "loss": loss, "elapsed_s": self.elapsed}
            if self.cfg.eval_every and self.iteration % self.cfg.eval_every == 0:
                record[f"heldout_loss_k{self.cfg.eval_budget}"] = self.heldout_loss()
                self.last_eval = record[f"heldout_loss_k{self.cfg.eval_budget}"]
            self.history.append(record)
            bar.update(1)
            postfix = {"loss": f"{loss:.4g}", "buffer": len(self.buffer)}
            if self.last_eval is not None:
                postfix[f"heldout@K={self.cfg.eval_budget}"] = f"{self.last_eval:.4g}"
            bar.set_postfix(postfix)
            if checkpoint and (self.iteration % self.cfg.checkpoint_every == 0 or self.iteration == self.cfg.iterations):
                self.save(checkpoint)
        bar.close()
        if checkpoint and self.iteration % self.cfg.checkpoint_every and self.iteration != self.cfg.iterations:
            self.save(checkpoint)   # stopped by the time budget between checkpoints
        return self.history

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self, with_buffer: bool = True, dtype: torch.dtype | None = None) -> dict:
        weights = self.theta.state_dict()
        if dtype is not None:   # e.g. float16 for a small committed checkpoint; load_theta reads it back as float32
            weights = {k: v.to(dtype) for k, v in weights.items()}
        state = {"theta": weights, "theta_config": self.theta.config(), "train_config": asdict(self.cfg),
                 "iteration": self.iteration, "elapsed_s": self.elapsed, "history": self.history}
        if with_buffer:
            state.update(optimizer=self.opt.state_dict(), buffer=self.buffer.state_dict(),
                         rng=self.gen.get_state(), torch_rng=torch.get_rng_state())
        return state

    def save(self, path: str | Path, with_buffer: bool = True, dtype: torch.dtype | None = None) -> None:
        state = self.state_dict(with_buffer, dtype)
        atomic_write(path, lambda p: torch.save(state, p))

    def resume(self, path: str | Path) -> None:
        state = load_checkpoint(path)
        saved = state["train_config"]
        mine = asdict(self.cfg)
        defaults = asdict(TrainConfig())   # a key the checkpoint predates had its default
        same_anyway = ("iterations", "checkpoint_every", "eval_every")
        differs = {k for k in mine if k not in same_anyway and k != "extra" and saved.get(k, defaults[k]) != mine[k]}
        # task settings recorded later than the checkpoint: compare only what it recorded
        old_extra = saved.get("extra") or {}
        if any(old_extra[k] != mine["extra"].get(k) for k in old_extra):
            differs.add("extra")
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
    return load_tensors(path, CheckpointError, "theta checkpoint", "train one with `landscape train-theta`",
                        keys=("theta", "theta_config", "train_config"))


def load_theta(path: str | Path, device="cpu") -> tuple[Theta, dict]:
    """theta in eval mode (parameters frozen) and the training config it was saved with."""
    state = load_checkpoint(path)
    tc = state["theta_config"]
    try:
        theta = Theta(tuple(tc["x_shape"]), tc["z_dim"], tc["width"], tc["depth"], tc.get("skip", "linear"),
                      tc.get("activation", "gelu"), tc.get("cond_dim", 0), tc.get("shift_only", False),
                      tc.get("residual_bound", 0.0))
        theta.load_state_dict({k: v.float() for k, v in state["theta"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:   # wrong shapes, missing keys
        reason = first_line(exc)
        raise CheckpointError(f"theta checkpoint {path} does not hold a theta its own config describes "
                              f"({type(exc).__name__}: {reason}); train one with `landscape train-theta`") from None
    for p in theta.parameters():
        p.requires_grad_(False)
    return theta.to(device).eval(), state["train_config"]
