"""A small DCGAN for CIFAR-10 (Radford et al. 2016), the prior of the generator purifier.

G maps a latent of ``latent_dim`` numbers to a 3x32x32 image in [0, 1]. It is sized to
train in about 45 minutes on 2 CPU cores (``landscape train-generator``); a user with a GPU
can train a wider one (``width``) with the same command or plug in their own generator.

Example::

    >>> G = load_generator("defense/checkpoints/dcgan-cifar10.pt")
    >>> images = G(torch.randn(8, G.latent_dim))      # (8, 3, 32, 32) in [0, 1]
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from landscape.io import CheckpointError, atomic_write, load_tensors

#: every key of the command that trains this, with its default
GENERATOR_DEFAULTS = {
    "seed": 0,
    "device": "auto",
    "threads": 0,
    "data": {"root": None, "split": "train", "n_examples": 0, "selection": "first", "download": True},
    "generator": {"latent_dim": 128, "width": 64},
    "train": {"epochs": 10, "batch_size": 128, "lr": 2.0e-4, "progress": True},
}

class Generator(nn.Module):
    """latent (N, latent_dim) -> image (N, 3, 32, 32) in [0, 1]."""

    def __init__(self, latent_dim: int = 128, width: int = 64):
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.fc = nn.Linear(latent_dim, 4 * width * 4 * 4)
        self.bn0 = nn.BatchNorm1d(4 * width * 4 * 4)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, 3, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn0(self.fc(z))).view(-1, 4 * self.width, 4, 4)
        return torch.sigmoid(self.net(h))


class Discriminator(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, width, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            nn.Flatten(), sn(nn.Linear(4 * width * 16, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1).squeeze(1)


def save_generator(path, G: Generator, extra: dict | None = None) -> None:
    payload = {"state_dict": G.state_dict(), "latent_dim": G.latent_dim, "width": G.width, **(extra or {})}
    atomic_write(path, lambda p: torch.save(payload, p))


def load_generator(path) -> Generator:
    """Load a checkpoint written by :func:`save_generator` (``weights_only=True``), in eval mode."""
    ckpt = load_tensors(path, CheckpointError, "generator checkpoint", "train one with `landscape train-generator`",
                        keys=("state_dict", "latent_dim", "width"))
    G = Generator(int(ckpt["latent_dim"]), int(ckpt["width"]))
    G.load_state_dict(ckpt["state_dict"], strict=True)
    for p in G.parameters():
        p.requires_grad_(False)
    return G.eval()


def build_generator(cfg: dict) -> nn.Module:
    """The generator a config names: ``name`` (``dcgan``, the default, or ``module:Class`` /
    ``path/file.py:Class`` with ``kwargs``) and ``weights``. A plugged-in class must take latents
    (N, latent_dim) to images (N, 3, 32, 32) in [0, 1] and expose ``latent_dim``."""
    from cifar10.classifiers import ModelError, _import_object, load_weights
    from landscape.io import resolve_path

    name = str(cfg.get("name") or "dcgan")
    weights = str(resolve_path(cfg["weights"])) if cfg.get("weights") else None
    if name == "dcgan":
        if not weights:
            raise ModelError("generator.weights is required (the committed one is checkpoints/dcgan-cifar10.pt)")
        return load_generator(Path(str(weights)).expanduser())
    G = _import_object(name)(**(cfg.get("kwargs") or {}))
    if not isinstance(G, nn.Module):
        raise ModelError(f"generator.name={name!r} built a {type(G).__name__}, not a torch.nn.Module")
    if not isinstance(getattr(G, "latent_dim", None), int):
        raise ModelError(f"generator {name!r} must expose an integer attribute latent_dim (the size of its latent)")
    if weights:
        load_weights(G, Path(str(weights)).expanduser(), strict=True)
    for p in G.parameters():
        p.requires_grad_(False)
    return G.eval()


def train_gan(images: torch.Tensor, out_dir, epochs: int = 10, batch_size: int = 128, latent_dim: int = 128,
              width: int = 64, lr: float = 2e-4, seed: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    """Train G and D with the non-saturating GAN loss; resumable from ``out_dir/state.pt`` after each epoch."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    G, D = Generator(latent_dim, width).to(device), Discriminator(width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    start_epoch, elapsed, history = 0, 0.0, []
    state_path = out_dir / "state.pt"
    if state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=True)
        G.load_state_dict(st["G"]); D.load_state_dict(st["D"])
        opt_g.load_state_dict(st["opt_g"]); opt_d.load_state_dict(st["opt_d"])
        start_epoch, elapsed, history = int(st["epoch"]), float(st["elapsed"]), list(st["history"])
        torch.set_rng_state(st["rng"])
    n = len(images)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        G.train(); D.train()
        bar = tqdm(range(0, n - batch_size + 1, batch_size), desc=f"GAN epoch {epoch + 1}/{epochs}", disable=not progress)
        sums = torch.zeros(2)
        for i in bar:
            real = images[perm[i:i + batch_size]].to(device)
            if torch.rand(()) < 0.5:
                real = real.flip(3)
            z = torch.randn(batch_size, latent_dim, device=device)
            fake = G(z)
            loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
            opt_d.zero_grad(set_to_none=True); loss_d.backward(); opt_d.step()
            loss_g = F.softplus(-D(fake)).mean()
            opt_g.zero_grad(set_to_none=True); loss_g.backward(); opt_g.step()
            sums += torch.tensor([loss_d.item(), loss_g.item()])
            bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}")
        steps = max(1, len(range(0, n - batch_size + 1, batch_size)))
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss_d": float(sums[0] / steps), "loss_g": float(sums[1] / steps),
                        "elapsed_s": elapsed})
        state = {"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "epoch": epoch + 1, "elapsed": elapsed, "history": history, "rng": torch.get_rng_state()}
        atomic_write(state_path, lambda p: torch.save(state, p))
        save_generator(out_dir / "generator.pt", G.cpu().eval(), {"epoch": epoch + 1, "elapsed_s": elapsed})
        G.to(device)
    return {"epochs": epochs, "elapsed_s": elapsed, "history": history}


def train_from_config(cfg: dict, out, progress: bool = True) -> dict:
    """``landscape train-generator``: train the DCGAN on the configured images; write it and a summary."""
    import json

    from cifar10.data import load_cifar10, select_subset
    from landscape.config import dump_config
    from landscape.io import atomic_write_text

    d, t = cfg["data"], cfg["train"]
    data = select_subset(load_cifar10(d["root"], d["split"], bool(d["download"])), d["n_examples"], cfg["seed"],
                         d["selection"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    from landscape.device import pick_device

    device = str(pick_device(cfg["device"]))
    summary = train_gan(data.images, out, epochs=int(t["epochs"]), batch_size=int(t["batch_size"]),
                        latent_dim=int(cfg["generator"]["latent_dim"]), width=int(cfg["generator"]["width"]),
                        lr=float(t["lr"]), seed=int(cfg["seed"]), device=device,
                        progress=bool(t["progress"]) and progress)
    summary["data"] = data.source
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
