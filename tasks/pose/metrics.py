"""3D pose errors in millimetres: MPJPE and Procrustes-aligned MPJPE (PA-MPJPE).

Both compare root-centred joints. MPJPE here is measured in the generator's world frame (Y up,
pelvis at 0); since the camera's rotation is known to the inversion and every error is a distance,
it equals the MPJPE in the camera's orientation. PA-MPJPE first finds the similarity transform
(scale, rotation, translation) that best aligns the prediction to the truth (Umeyama 1991), so it
measures the pose's shape alone (the usual second figure of 3D pose papers).
"""
from __future__ import annotations

import torch


def mpjpe(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error (N,) of (N, J, 3) joints, after centring both at their first joint."""
    pred = pred - pred[..., :1, :]
    truth = truth - truth[..., :1, :]
    return (pred - truth).norm(dim=-1).mean(-1)


def procrustes_align(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``pred`` (N, J, 3) moved by the least-squares similarity transform onto ``truth``."""
    pred, truth = pred.double(), truth.double()
    mp, mt = pred.mean(-2, keepdim=True), truth.mean(-2, keepdim=True)
    p, t = pred - mp, truth - mt
    cov = t.transpose(-1, -2) @ p                       # (N, 3, 3) = sum_j t_j p_j^T
    U, S, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ D @ Vh
    var = (p ** 2).sum((-1, -2)).clamp_min(1e-12)
    scale = (S * D.diagonal(dim1=-2, dim2=-1)).sum(-1) / var
    return (scale.view(-1, 1, 1) * p @ R.transpose(-1, -2) + mt)


def pa_mpjpe(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """MPJPE (N,) after Procrustes alignment (scale, rotation, translation)."""
    aligned = procrustes_align(pred, truth)
    return (aligned - truth.double()).norm(dim=-1).mean(-1).to(pred.dtype)
