"""The self-supervised task of the reverse-attack purifier (Mao et al., ICCV 2021).

A small head maps the frozen classifier's penultimate features to an embedding; views are
random augmentations of the same image; the loss is SimCLR's contrastive cross-entropy with
cosine similarities over a temperature. Natural images have a low loss; an adversarial
perturbation raises it, and the purifier reverses the attack by lowering it again.

Negatives: training uses the other images of the batch. Purification uses a fixed bank of
embedded training views stored with the head, so an image's loss (and so its purified version)
does not depend on which other test images share its batch: with in-batch negatives the same
image purified in batches of 50 or of 250 came out 53% vs 76% correct (250 JPEG test images,
reverse-x K = 10).

Example::

    >>> ssl = SelfSupervised(classifier, ContrastiveHead(64))
    >>> loss = ssl(images)          # (N,), one loss per image, fresh augmentations each call
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from cifar10.classifiers import MODEL_DEFAULTS
from landscape.io import CheckpointError, atomic_write, load_tensors

#: every key of the command that trains this, with its default
SSL_DEFAULTS = {
    "seed": 0,
    "threads": 0,
    "model": dict(MODEL_DEFAULTS),
    "data": {"root": None, "n_examples": 0, "n_heldout": 500, "download": True},
    "train": {"epochs": 3, "batch_size": 256, "lr": 1.0e-3, "temperature": 0.2, "hidden": 256, "out_dim": 128,
              "bank_size": 1024, "progress": True},   # bank_size: fixed negatives for purification
}

class ContrastiveHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 128):
        super().__init__()
        self.in_dim, self.hidden, self.out_dim = in_dim, hidden, out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        # fixed negatives (embedded training views); empty = negatives from the batch
        self.register_buffer("bank", torch.zeros(0, out_dim), persistent=False)

    def forward(self, f):
        return F.normalize(self.net(f), dim=1)


def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (translation up to 4 px, scale 0.8-1), horizontal flip and brightness/contrast
    jitter, done with ``grid_sample`` so the views stay differentiable in ``x``."""
    n = len(x)
    r = lambda *s: torch.rand(*s, generator=generator).to(x.device, x.dtype)  # noqa: E731
    scale = 0.8 + 0.2 * r(n)
    flip = torch.where(r(n) < 0.5, -1.0, 1.0).to(x.dtype)
    tx, ty = (r(n) * 2 - 1) * 0.25, (r(n) * 2 - 1) * 0.25
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    bright = (r(n, 1, 1, 1) * 2 - 1) * 0.2
    contrast = 1 + (r(n, 1, 1, 1) * 2 - 1) * 0.2
    mean = v.mean((1, 2, 3), keepdim=True)
    return ((v - mean) * contrast + mean + bright).clamp(0, 1)


def contrastive_loss(e1: torch.Tensor, e2: torch.Tensor, temperature: float = 0.2, groups: int = 1,
                     bank: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example symmetric InfoNCE; with ``groups`` > 1 (rows laid out as repeat_interleave), an
    example's negatives are only the rows of its own group (restarts never see copies of themselves).
    With a ``bank`` (M, D) of fixed negatives, each example's loss depends on that example alone."""
    if bank is not None and len(bank):
        pos = (e1 * e2).sum(1, keepdim=True) / temperature
        bank = bank.to(e1)
        l1 = torch.logsumexp(torch.cat([pos, e1 @ bank.T / temperature], 1), 1) - pos[:, 0]
        l2 = torch.logsumexp(torch.cat([pos, e2 @ bank.T / temperature], 1), 1) - pos[:, 0]
        return 0.5 * (l1 + l2)
    logits = e1 @ e2.T / temperature
    n = len(e1)
    if groups > 1:
        g = torch.arange(n, device=e1.device) % groups
        logits = logits.masked_fill(g.view(-1, 1) != g.view(1, -1), float("-inf"))
    target = torch.arange(n, device=e1.device)
    return 0.5 * (F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none"))


class FeatureExtractor(nn.Module):
    """Penultimate features of a classifier: its ``features`` method, else the input of its last Linear."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        inner = getattr(classifier, "model", classifier)
        self._direct = getattr(inner, "features", None) if hasattr(classifier, "mean") else getattr(classifier, "features", None)
        self._last = [m for m in classifier.modules() if isinstance(m, nn.Linear)][-1] if self._direct is None else None

    def forward(self, x):
        if self._direct is not None:
            if hasattr(self.classifier, "mean"):
                x = (x - self.classifier.mean) / self.classifier.std
            return self._direct(x)
        captured = {}
        handle = self._last.register_forward_hook(lambda m, inp, out: captured.__setitem__("f", inp[0]))
        try:
            self.classifier(x)
        finally:
            handle.remove()
        return captured["f"].flatten(1)


class SelfSupervised(nn.Module):
    """x -> per-image contrastive loss between ``views`` random views (pairs averaged)."""

    def __init__(self, classifier: nn.Module, head: ContrastiveHead, temperature: float = 0.2, views: int = 2):
        super().__init__()
        self.features, self.head = FeatureExtractor(classifier), head
        self.temperature, self.views = temperature, views

    def forward(self, x: torch.Tensor, groups: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        emb = [self.head(self.features(augment(x, generator))) for _ in range(self.views)]
        losses = [contrastive_loss(emb[i], emb[i + 1], self.temperature, groups, self.head.bank)
                  for i in range(0, self.views - 1, 2)]
        return torch.stack(losses).mean(0)


def feature_dim(classifier: nn.Module) -> int:
    device = next(iter(classifier.parameters()), torch.empty(0)).device
    with torch.no_grad():
        return FeatureExtractor(classifier)(torch.rand(2, 3, 32, 32, device=device)).shape[1]


def build_bank(classifier: nn.Module, head: ContrastiveHead, images: torch.Tensor, size: int = 1024, seed: int = 0,
               batch_size: int = 256) -> torch.Tensor:
    """Embeddings of one random view of ``size`` training images: the purifier's fixed negatives."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=gen)[:size]
    features = FeatureExtractor(classifier)
    with torch.no_grad():
        return torch.cat([head(features(augment(images[idx[i:i + batch_size]], gen)))
                          for i in range(0, len(idx), batch_size)])


def train_head(classifier: nn.Module, images: torch.Tensor, epochs: int = 3, batch_size: int = 256, lr: float = 1e-3,
               temperature: float = 0.2, hidden: int = 256, out_dim: int = 128, seed: int = 0,
               progress: bool = True, bank_size: int = 1024) -> tuple[ContrastiveHead, list]:
    """Train only the head (the classifier stays frozen) on training images; then embed
    ``bank_size`` of them as the fixed negatives used at purification (0: in-batch negatives)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = ContrastiveHead(feature_dim(classifier), hidden, out_dim)
    ssl = SelfSupervised(classifier, head, temperature)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    history = []
    steps = max(1, len(images) // batch_size)
    for epoch in range(epochs):
        perm = torch.randperm(len(images), generator=gen)
        total = 0.0
        bar = tqdm(range(steps), desc=f"ssl head epoch {epoch + 1}/{epochs}", disable=not progress)
        for i in bar:
            x = images[perm[i * batch_size:(i + 1) * batch_size]]
            with torch.no_grad():
                f1, f2 = ssl.features(augment(x, gen)), ssl.features(augment(x, gen))
            loss = contrastive_loss(head(f1), head(f2), temperature).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append({"epoch": epoch + 1, "loss": total / steps, "chance": math.log(batch_size)})
    head.eval()
    if bank_size > 0:
        head.bank = build_bank(classifier, head, images, bank_size, seed)
    return head, history


def save_head(path, head: ContrastiveHead, extra: dict | None = None) -> None:
    payload = {"state_dict": head.state_dict(), "in_dim": head.in_dim, "hidden": head.hidden, "out_dim": head.out_dim,
               **(extra or {})}
    if len(head.bank):
        payload["bank"] = head.bank.detach().cpu().clone()
    atomic_write(path, lambda p: torch.save(payload, p))


def load_head(path) -> ContrastiveHead:
    ckpt = load_tensors(path, CheckpointError, "self-supervised head", "train one with `landscape train-ssl-head`",
                        keys=("state_dict", "in_dim", "hidden", "out_dim"))
    head = ContrastiveHead(int(ckpt["in_dim"]), int(ckpt["hidden"]), int(ckpt["out_dim"]))
    head.load_state_dict(ckpt["state_dict"])
    if ckpt.get("bank") is not None:
        head.bank = ckpt["bank"].float()
    for p in head.parameters():
        p.requires_grad_(False)
    return head.eval()


def train_from_config(cfg: dict, out, progress: bool = True) -> dict:
    """``landscape train-ssl-head``: train the head on the classifier's features, embed the bank, and
    measure what matters (PGD-10 raises the held-out self-supervised loss); write head and summary."""
    import json
    import time
    from pathlib import Path

    import torchattacks

    from cifar10.classifiers import build_classifier
    from cifar10.data import load_cifar10, select_subset
    from landscape.config import dump_config
    from landscape.io import atomic_write_text

    d, t = cfg["data"], cfg["train"]
    model = build_classifier(cfg["model"], download=bool(d["download"]))
    train = select_subset(load_cifar10(d["root"], "train", bool(d["download"])), d["n_examples"], cfg["seed"])
    test = select_subset(load_cifar10(d["root"], "test", bool(d["download"])), d["n_heldout"], cfg["seed"])
    start = time.perf_counter()
    head, history = train_head(model, train.images, int(t["epochs"]), int(t["batch_size"]), float(t["lr"]),
                               float(t["temperature"]), int(t["hidden"]), int(t["out_dim"]), int(cfg["seed"]),
                               progress=bool(t["progress"]) and progress, bank_size=int(t["bank_size"]))
    seconds = time.perf_counter() - start
    ssl = SelfSupervised(model, head, float(t["temperature"]))
    adv = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10)(test.images, test.labels)
    torch.manual_seed(0)
    with torch.no_grad():
        clean_loss, adv_loss = float(ssl(test.images).mean()), float(ssl(adv).mean())
    summary = {"train_seconds": seconds, "history": history, "heldout_clean_ssl_loss": clean_loss,
               "heldout_pgd_ssl_loss": adv_loss, "n_heldout": len(test), "data": train.source,
               "classifier": cfg["model"]["name"]}
    out = Path(out)
    save_head(out, head, {"temperature": float(t["temperature"]), "classifier": str(cfg["model"]["name"])})
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".yaml"), dump_config(cfg))
    return summary
