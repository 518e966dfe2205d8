"""The paper's analyses for GAN inversion: out-of-distribution targets against a feed-forward
encoder, masked reconstruction with several hypotheses, and 2D slices of the loss landscape."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from landscape.io import atomic_write
from landscape.space import Space
from landscape.stats import mean_interval
from tasks.gan.problem import GanInversion, center_mask, psnr
from tasks.registry import TaskError


# -- (a) out of distribution -------------------------------------------------------------------
class Encoder(nn.Module):
    """Feed-forward baseline: image -> latent in one pass, trained to minimize ||G(E(y)) - y||^2."""

    def __init__(self, latent_dim: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(4 * width * 16, latent_dim))

    def forward(self, y):
        return self.net(y * 2 - 1)


def train_encoder(problem: GanInversion, iterations: int = 1500, batch_size: int = 64, lr: float = 1e-3,
                  seed: int = 0) -> tuple[Encoder, float]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = Encoder(problem.latent_shape[0])
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    t0 = time.perf_counter()
    for _ in range(iterations):
        y = problem.sample_targets(batch_size, gen)
        loss = problem.objective(enc(y), y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return enc.eval(), time.perf_counter() - t0


SHIFTS = {
    "in-distribution": lambda y: y,
    "colour (RGB->BGR)": lambda y: y.flip(1),
    "colour (inverted)": lambda y: 1 - y,
    "geometric (upside down)": lambda y: y.flip(2),
    "geometric (rot 90)": lambda y: y.rot90(1, (2, 3)),
}


def spaces(problem: GanInversion, theta, steps: dict) -> list:
    """(label, space, (rule, lr)): the plain and the learned space, each with the step ``invert`` tuned for it."""
    return [("X", Space(problem), steps["X"]), ("Z", Space(problem, theta), steps["Z"])]


def ood_analysis(problem: GanInversion, theta, steps: dict, images: torch.Tensor, budgets=(10, 200),
                 encoder_iterations: int = 1500, seed: int = 0) -> pd.DataFrame:
    """MSE of encoder, X descent and Z descent on shifted test images (and the encoder-initialized X descent)."""
    enc, enc_seconds = train_encoder(problem, encoder_iterations, seed=seed)
    rows = []
    n = len(images)
    for shift, fn in SHIFTS.items():
        y = fn(images).contiguous()
        with torch.no_grad():
            mse = problem.objective(enc(y), y)
        rows += _rows(shift, "encoder (1 pass)", 0, mse)
        for label, space, (rule, lr) in spaces(problem, theta, steps):
            res = space.descend(y, space.init(n, torch.Generator().manual_seed(seed)), max(budgets), lr, rule)
            for k in budgets:
                rows += _rows(shift, "descent in X" if label == "X" else "descent in Z (learned)", k, res.losses[k])
    df = pd.DataFrame(rows)
    df.attrs["encoder_train_seconds"] = enc_seconds
    return df


def _rows(shift, method, k, mse):
    m, lo, hi = mean_interval(mse.double().tolist())
    p = psnr(mse).double().tolist()
    pm, plo, phi = mean_interval(p)
    return [{"distribution": shift, "method": method, "budget": k, "n": len(mse), "mse": m, "mse_ci_low": lo,
             "mse_ci_high": hi, "psnr": pm, "psnr_ci_low": plo, "psnr_ci_high": phi}]


# -- (b) masked reconstruction -----------------------------------------------------------------
def masked_analysis(problem: GanInversion, theta, steps: dict, images: torch.Tensor,
                    hypotheses: int = 4, budgets=(10, 200), seed: int = 0):
    """Observe the left half; M hypotheses from different initial points; fidelity on the observed half,
    diversity (mean pairwise RMS distance) on the hidden half. Returns a table and the reconstructions."""
    n, m = len(images), hypotheses
    mask = center_mask(n * m, images.shape[-1])
    y = images.repeat_interleave(m, 0)
    target = {"image": y, "mask": mask}
    out, recon = [], {}
    for label, space, (rule, lr) in spaces(problem, theta, steps):
        res = space.descend(target, space.init(n * m, torch.Generator().manual_seed(seed)), max(budgets), lr, rule,
                            keep_trajectory=True)
        for k in budgets:
            with torch.no_grad():
                img = problem.forward(space.to_x(res.trajectory[k], target))
            hidden = 1 - mask
            obs_mse = ((img - y) ** 2 * mask).flatten(1).sum(1) / mask.expand_as(y).flatten(1).sum(1)
            hid_mse = ((img - y) ** 2 * hidden).flatten(1).sum(1) / hidden.expand_as(y).flatten(1).sum(1)
            h = (img * hidden).view(n, m, -1)
            d = torch.cdist(h, h) / hidden.expand_as(y)[0].sum().sqrt()
            diversity = d.sum((1, 2)) / (m * (m - 1))
            for name, vals in (("observed MSE", obs_mse), ("hidden MSE (vs truth)", hid_mse),
                               ("hidden diversity (RMS)", diversity)):
                mean, lo, hi = mean_interval(vals.double().tolist())
                out.append({"space": label, "budget": k, "figure": name, "mean": mean, "ci_low": lo, "ci_high": hi})
            recon[(label, k)] = img.view(n, m, *img.shape[1:])
    return pd.DataFrame(out), recon


def masked_grid(images, recon, path: Path, rows: int = 4) -> None:
    """Columns: truth, observed half, then the hypotheses of each (space, K)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(recon)
    m = recon[keys[0]].shape[1]
    rows = min(rows, recon[keys[0]].shape[0])
    cols = 2 + len(keys) * m
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.0 + 0.4), squeeze=False)
    mask = center_mask(1, images.shape[-1])[0]
    for r in range(rows):
        panels = [images[r], images[r] * mask + 0.5 * (1 - mask)]
        for key in keys:
            panels += list(recon[key][r])
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([]); ax.set_yticks([])
            if r == 0:
                title = "truth" if c == 0 else "observed" if c == 1 else f"{keys[(c - 2) // m][0]} K={keys[(c - 2) // m][1]}"
                ax.set_title(title, fontsize=6)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


# -- (c) the loss landscape ----------------------------------------------------------------------
def landscape_slices(problem: GanInversion, theta, steps: dict, image: torch.Tensor, k: int = 100,
                     span: float = 1.0, grid: int = 25, seed: int = 0) -> dict:
    """Loss over a 2D slice through a solution, in X and in Z, along two random directions scaled to the
    solution's norm (``span`` = 1 reaches one solution-norm away)."""
    y = image.unsqueeze(0)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    a = torch.linspace(-span, span, grid)
    for label, space, (rule, lr) in spaces(problem, theta, steps):
        res = space.descend(y, space.init(1, torch.Generator().manual_seed(seed)), k, lr, rule)
        centre = res.best_x if label == "X" else res.var   # a point of the space the slice is drawn in
        d1, d2 = torch.randn(2, *centre.shape[1:], generator=gen)
        d1 = d1 / d1.norm() * centre.norm()
        d2 = d2 / d2.norm() * centre.norm()
        pts = centre + a.view(-1, 1, 1) * d1 + a.view(1, -1, 1) * d2
        with torch.no_grad():
            ys = y.expand(grid * grid, *y.shape[1:])
            loss = problem.objective(space.to_x(pts.view(grid * grid, -1), ys), ys)
        out[label] = loss.view(grid, grid)
    out["alphas"] = a
    return out


def plot_slices(slices: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    a = slices["alphas"].numpy()
    for ax, space, title in ((axes[0], "X", "plain latent space X"), (axes[1], "Z", "learned landscape Z")):
        cs = ax.contourf(a, a, slices[space].log10().numpy(), levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, label="log10 MSE")
        ax.plot([0], [0], "r*", ms=10)
        ax.set_title(title)
        ax.set_xlabel("direction 1 (x solution norm)")
        ax.set_ylabel("direction 2")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def chosen_step(summary: pd.DataFrame, space: str, k: int) -> tuple:
    """The (rule, lr) tuned for ``space`` at the budget nearest to ``k``."""
    g = summary[summary["space"] == space]
    row = g.iloc[(g["budget"] - k).abs().argsort().iloc[0]]
    return str(row["rule"]), float(row["lr"])


def run_all(problem: GanInversion, theta, summary: pd.DataFrame, cfg: dict, out: Path, log=print) -> dict:
    """Run the analyses named in ``invert.analyses``; write their tables and figures into ``out``."""
    a = cfg["analyses"]
    names = a["run"]
    unknown = set(names) - {"ood", "masked", "landscape"}
    if unknown:
        raise TaskError(f"unknown analyses {sorted(unknown)}; valid: ood, masked, landscape")
    seed = int(cfg["seed"])
    steps = {"X": chosen_step(summary, "X", 200), "Z": chosen_step(summary, "Z", 10)}
    images = problem.heldout(int(a["n_images"]))
    written = {}
    if "ood" in names:
        log("analysis: out-of-distribution targets against a feed-forward encoder")
        df = ood_analysis(problem, theta, steps, images, (10, 200), int(a["encoder_iterations"]), seed)
        atomic_write(out / "ood.csv", lambda p: df.to_csv(p, index=False))
        written["ood"] = df
    if "masked" in names:
        log("analysis: masked reconstruction, several hypotheses")
        df, recon = masked_analysis(problem, theta, steps, images[: int(a["n_masked"])], int(a["hypotheses"]),
                                    (10, 200), seed)
        atomic_write(out / "masked.csv", lambda p: df.to_csv(p, index=False))
        masked_grid(images, recon, out / "masked_grid.png")
        written["masked"] = df
    if "landscape" in names:
        log("analysis: 2D slices of the loss landscape in X and Z")
        slices = landscape_slices(problem, theta, steps, images[0], seed=seed)
        plot_slices(slices, out / "landscape_slices.png")
        written["landscape"] = slices
    return written
