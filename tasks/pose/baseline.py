"""The feed-forward baseline: a 2D-to-3D lifting network in the style of Martinez et al. (ICCV 2017).

"A simple yet effective baseline for 3D human pose estimation": normalized 2D joints -> Linear(width)
-> two residual blocks of [Linear, BatchNorm, ReLU, Dropout 0.5] x 2 -> 3D joints in the camera frame,
root-centred, trained with a squared error on z-scored coordinates. The paper's width is 1024; the
analyses default to 512 to train in minutes on a CPU (``analyses.baseline_width``). Two adaptations, both to give it
what inversion gets: inputs are in normalized image coordinates ((kp - c) / f, centred on the mean of the
visible joints), so it does not depend on the intrinsics; and missing joints are zeroed with one
visibility flag per joint, trained on the same random masks as inversion's training targets. It is
trained on the same training subjects and camera distribution as theta (``problem.sample_targets``).
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from tasks.pose.camera import to_camera
from tasks.pose.metrics import mpjpe


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, h):
        return h + self.net(h)


class LiftingNet(nn.Module):
    """2D keypoints (+ visibility) -> root-centred camera-frame 3D joints (mm)."""

    def __init__(self, width: int = 1024, blocks: int = 2, dropout: float = 0.5, joints: int = 17):
        super().__init__()
        self.joints = joints
        self.inp = nn.Sequential(nn.Linear(3 * joints, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[_Block(width, dropout) for _ in range(blocks)])
        self.out = nn.Linear(width, 3 * joints)
        self.register_buffer("in_mean", torch.zeros(2 * joints))
        self.register_buffer("in_std", torch.ones(2 * joints))
        self.register_buffer("out_mean", torch.zeros(3 * joints))
        self.register_buffer("out_std", torch.ones(3 * joints))

    @staticmethod
    def features(target: dict) -> torch.Tensor:
        """(N, 17, 2) normalized image coordinates centred on the visible joints' mean, and (N, 17) visibility."""
        kp, vis = target["keypoints"], (target["visibility"] > 0).float()
        ab = (kp - target["principal"].view(-1, 1, 2)) / target["focal"].view(-1, 1, 1)
        centre = (ab * vis.unsqueeze(-1)).sum(1, keepdim=True) / vis.sum(1).clamp_min(1).view(-1, 1, 1)
        return (ab - centre) * vis.unsqueeze(-1), vis

    def forward(self, target: dict) -> torch.Tensor:
        ab, vis = self.features(target)
        x = ((ab.flatten(1) - self.in_mean) / self.in_std) * vis.repeat_interleave(2, 1)
        h = self.blocks(self.inp(torch.cat([x, vis], 1)))
        y = self.out(h) * self.out_std + self.out_mean
        y = y.view(-1, self.joints, 3)
        return y - y[:, :1]

    def predict_world(self, target: dict) -> torch.Tensor:
        """Prediction rotated back to the world frame (camera = world R^T), to compare with ``pose3d``."""
        return self(target) @ target["rotation"]


def train_lifting(problem, iterations: int = 6000, batch_size: int = 256, lr: float = 1e-3, width: int = 1024,
                  seed: int = 0, log=None) -> tuple[LiftingNet, dict]:
    """Train on ``problem.sample_targets`` (training subjects, training cameras, random missing joints)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 101)
    net = LiftingNet(width)
    stats = problem.sample_targets(8192, gen)
    ab, vis = LiftingNet.features(stats)
    v2 = vis.repeat_interleave(2, 1)
    flat = ab.flatten(1)
    mean = (flat * v2).sum(0) / v2.sum(0).clamp_min(1)
    std = (((flat - mean) ** 2 * v2).sum(0) / v2.sum(0).clamp_min(1)).sqrt().clamp_min(1e-6)
    cam = to_camera(stats["pose3d"], stats["rotation"]).flatten(1)
    net.in_mean.copy_(mean); net.in_std.copy_(std)
    net.out_mean.copy_(cam.mean(0)); net.out_std.copy_(cam.std(0).clamp_min(1.0))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.05 ** (1 / max(iterations, 1)))
    t0 = time.perf_counter()
    net.train()
    for it in range(iterations):
        tgt = problem.sample_targets(batch_size, gen)
        truth = to_camera(tgt["pose3d"], tgt["rotation"])
        pred = net(tgt)
        loss = (((pred - truth).flatten(1)) / net.out_std).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (it + 1) % max(1, iterations // 5) == 0:
            with torch.no_grad():
                err = mpjpe(pred, truth).mean().item()
            log(f"  lifting baseline: iteration {it + 1}/{iterations}, training MPJPE {err:.1f} mm")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, {"train_seconds": time.perf_counter() - t0, "iterations": iterations, "width": width}


@torch.no_grad()
def timed_predict(net: LiftingNet, target: dict) -> tuple[torch.Tensor, float]:
    """World-frame predictions and the seconds of one forward pass over the whole batch."""
    net(target)  # warm-up
    t0 = time.perf_counter()
    pred = net.predict_world(target)
    return pred, time.perf_counter() - t0
