"""Skeleton drawings for people to look at: 2D keypoints, 3D poses, a grid, and a GIF of a clip.

3D poses are drawn in the camera's orientation (x right, depth into the page, up up) from a view a
little to the side, so that a depth error, the thing single-view lifting gets wrong, is visible.
Subject's left limbs are blue, right limbs red.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from landscape.io import atomic_write
from tasks.pose.mocap import JOINT_NAMES_17, JOINT_PARENTS_17


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(j: int) -> str:
    name = JOINT_NAMES_17[j]
    return "tab:blue" if name.startswith("l_") else "tab:red" if name.startswith("r_") else "0.2"


def draw_2d(ax, kp, vis=None, alpha: float = 1.0, show_missing: bool = True, colour: str | None = None) -> None:
    """Keypoints (17, 2) px in image coordinates (v down). Missing joints (vis 0): hollow, their bones dotted
    when ``show_missing`` (their coordinates are known, e.g. a synthetic target), else not drawn."""
    kp = torch.as_tensor(kp).detach().cpu()
    vis = torch.ones(17) if vis is None else torch.as_tensor(vis).detach().cpu()
    for j, p in enumerate(JOINT_PARENTS_17):
        if p < 0:
            continue
        seen = vis[j] > 0 and vis[p] > 0
        if not seen and not show_missing:
            continue
        ax.plot([kp[p, 0], kp[j, 0]], [kp[p, 1], kp[j, 1]], "-" if seen else ":", color=colour or _colour(j), lw=1.5,
                alpha=alpha)
    shown = vis > 0
    ax.scatter(kp[shown, 0], kp[shown, 1], s=6, color="k", alpha=alpha)
    if show_missing:
        ax.scatter(kp[~shown, 0], kp[~shown, 1], s=10, facecolors="none", edgecolors="k", alpha=alpha)
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xticks([]); ax.set_yticks([])


def draw_3d(ax, pose_cam, colour: str | None = None, alpha: float = 1.0, radius: float = 1000.0) -> None:
    """Camera-oriented root-centred joints (17, 3) mm on a 3D axis."""
    p = torch.as_tensor(pose_cam).detach().cpu()
    X, Y, Z = p[:, 0], p[:, 2], -p[:, 1]
    for j, par in enumerate(JOINT_PARENTS_17):
        if par < 0:
            continue
        ax.plot([X[par], X[j]], [Y[par], Y[j]], [Z[par], Z[j]], color=colour or _colour(j), lw=1.5, alpha=alpha)
    ax.set_xlim(-radius, radius); ax.set_ylim(-radius, radius); ax.set_zlim(-radius, radius)
    ax.set_xticklabels([]); ax.set_yticklabels([]); ax.set_zticklabels([])
    ax.view_init(elev=12, azim=-60)
    try:
        ax.set_box_aspect((1, 1, 1))
    except AttributeError:  # pragma: no cover - old matplotlib
        pass


def samples_figure(poses: torch.Tensor, path: Path, title: str, cols: int = 6) -> None:
    """A grid of 3D poses (world frame, Y up, seen from the front) for the model card."""
    plt = _mpl()
    n = len(poses)
    rows = (n + cols - 1) // cols
    fig = plt.figure(figsize=(cols * 1.8, rows * 2.0 + 0.4))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        world = poses[i]
        cam_like = torch.stack([world[:, 0], -world[:, 1], -world[:, 2]], -1)   # camera on +Z, looking at -Z
        draw_3d(ax, cam_like)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def reconstruction_grid(rows: list[dict], columns: list[str], path: Path, title: str = "",
                        truth_title: str = "3D truth") -> None:
    """One row per example: ``{"keypoints", "visibility", "truth", <column>: pose_cam, ...}``; the first panel is
    the 2D input, the second the 3D truth, then one 3D panel per named column (titled with its MPJPE)."""
    plt = _mpl()
    ncol = 2 + len(columns)
    fig = plt.figure(figsize=(ncol * 1.7, len(rows) * 1.8 + 0.5))
    for r, row in enumerate(rows):
        ax = fig.add_subplot(len(rows), ncol, r * ncol + 1)
        if "reprojected" in row:       # the reconstruction's projection, under the input
            draw_2d(ax, row["reprojected"], None, alpha=0.5, colour="0.6")
        draw_2d(ax, row["keypoints"], row["visibility"], show_missing="reprojected" not in row)
        if r == 0:
            ax.set_title("2D input" + (" (grey: fit)" if "reprojected" in row else ""), fontsize=7)
        ax = fig.add_subplot(len(rows), ncol, r * ncol + 2, projection="3d")
        draw_3d(ax, row["truth"])
        if r == 0:
            ax.set_title(truth_title, fontsize=7)
        for c, name in enumerate(columns):
            ax = fig.add_subplot(len(rows), ncol, r * ncol + 3 + c, projection="3d")
            draw_3d(ax, row["truth"], colour="0.75", alpha=0.6)
            draw_3d(ax, row[name])
            err = (torch.as_tensor(row[name]) - torch.as_tensor(row["truth"])).norm(dim=-1).mean()
            ax.set_title(f"{name}\n{err:.0f} mm" if r == 0 else f"{err:.0f} mm", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def clip_gif(truth_cam: torch.Tensor, recon_cam: torch.Tensor, errors: torch.Tensor, path: Path,
             title: str, fps: int = 10) -> None:
    """Animation (GIF) of a clip: truth beside reconstruction, frame by frame, with each frame's MPJPE."""
    plt = _mpl()
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig = plt.figure(figsize=(6, 3.2))
    a1 = fig.add_subplot(1, 2, 1, projection="3d")
    a2 = fig.add_subplot(1, 2, 2, projection="3d")

    def frame(i):
        for ax, pose, name in ((a1, truth_cam[i], "truth"), (a2, recon_cam[i], "reconstruction")):
            ax.cla()
            draw_3d(ax, pose)
            ax.set_title(name, fontsize=8)
        fig.suptitle(f"{title}  frame {i + 1}/{len(truth_cam)}  MPJPE {float(errors[i]):.0f} mm", fontsize=8)
        return []

    anim = FuncAnimation(fig, frame, frames=len(truth_cam), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.gif")   # Pillow picks the format from the suffix
    try:
        anim.save(str(tmp), writer=PillowWriter(fps=fps))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
