"""``landscape train-theta``: learn a landscape theta for a task, resumable from its state file."""
from __future__ import annotations

from pathlib import Path

import torch

from landscape.config import dump_config
from landscape.io import atomic_write, atomic_write_text
from landscape.trainer import ThetaTrainer, TrainConfig
from tasks.registry import TaskError, build_task, get_task


def train_theta(task: str, cfg: dict, out: Path, progress: bool = True) -> ThetaTrainer:
    """Train (or resume, from ``out/state.pt``) and write ``out/theta.pt``; returns the trainer.

    The checkpoint keeps the task's name and the settings the theta is only valid for (the task's
    ``record``, e.g. the reverse attack's eps_rev), so whoever loads it can refuse a mismatch."""
    record = get_task(task).record
    extra = {"task": task, **(record(cfg) if record else {})}
    tcfg = TrainConfig.from_dict({**cfg["theta"], "seed": cfg["seed"], "extra": extra})
    tcfg.validate()  # before anything is written
    dtypes = {"float32": None, "float16": torch.float16}
    if cfg.get("save_dtype", "float32") not in dtypes:
        raise TaskError(f"save_dtype must be float32 or float16, got {cfg.get('save_dtype')!r}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    trainer = ThetaTrainer(build_task(task, cfg), tcfg, device=cfg["device"])
    state = out / "state.pt"
    if state.is_file():
        trainer.resume(state)
        if progress:
            print(f"resuming from {state} at iteration {trainer.iteration}")
    trainer.train(state, progress=progress)
    trainer.save(out / "theta.pt", with_buffer=False, dtype=dtypes[cfg.get("save_dtype", "float32")])
    write_learning_curve(trainer.history, out, task)
    return trainer


def write_learning_curve(history: list, out: Path, title: str) -> None:
    """``learning_curve.csv`` (every iteration's training loss, and the held-out loss where measured) and a plot."""
    import pandas as pd

    df = pd.DataFrame(history)
    atomic_write(out / "learning_curve.csv", lambda p: df.to_csv(p, index=False))
    held = [c for c in df.columns if c.startswith("heldout_loss_k")]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(df["iteration"], df["loss"].rolling(50, min_periods=1).mean(), color="0.6",
            label="training loss (mean of 50)")
    for c in held:
        g = df.dropna(subset=[c])
        ax.plot(g["iteration"], g[c], "o-", color="tab:red", label=f"held-out loss after K={c[len('heldout_loss_k'):]}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"{title}: theta training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "learning_curve.png", lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
