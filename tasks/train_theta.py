"""``landscape train-theta``: learn a landscape theta for a task, resumable from its state file."""
from __future__ import annotations

from pathlib import Path

from landscape.config import dump_config
from landscape.io import atomic_write_text
from landscape.trainer import ThetaTrainer, TrainConfig
from tasks.registry import build_task


def train_theta(task: str, cfg: dict, out: Path, progress: bool = True) -> ThetaTrainer:
    """Train (or resume, from ``out/state.pt``) and write ``out/theta.pt``; returns the trainer."""
    tcfg = TrainConfig.from_dict({**cfg["theta"], "seed": cfg["seed"], "extra": {"task": task}})
    tcfg.validate()  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    trainer = ThetaTrainer(build_task(task, cfg), tcfg, device=cfg["device"])
    state = out / "state.pt"
    if state.is_file():
        trainer.resume(state)
        if progress:
            print(f"resuming from {state} at iteration {trainer.iteration}")
    trainer.train(state, progress=progress)
    trainer.save(out / "theta.pt", with_buffer=False)
    return trainer
