"""The pinhole camera of the pose task: viewpoints around a person, projection, and the person's position.

World frame: the mocap's (Y up, mm), pose root-centred (pelvis at 0). A camera is its rotation R
(world -> camera: x right, y down, z forward, so pixel v grows downwards), focal length f (px) and
principal point c (px). A camera point q projects to ``u = f q_x / q_z + c_x``, ``v = f q_y / q_z + c_y``.

Where the person stands relative to the camera (the translation t of the root in camera coordinates)
is *not* given to the inversion: real users know their camera's intrinsics and, from gravity, its
tilt, but not how far away the person is. ``place`` finds t in closed form for the current 3D pose
(the linear least-squares form of the perspective equations, weighted by visibility, with a floor on
the depth), so the loss is the reprojection error at the best placement of the pose and x only has
to explain its shape.
"""
from __future__ import annotations

import torch

MIN_DEPTH_MM = 100.0


def look_at(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) world -> camera rotations of cameras at (azimuth, elevation) looking at the origin.

    Azimuth 0 puts the camera on the world +Z axis (looking along -Z); elevation > 0 looks down from above.
    """
    a, e = torch.deg2rad(torch.as_tensor(azimuth_deg)), torch.deg2rad(torch.as_tensor(elevation_deg))
    centre = torch.stack([torch.cos(e) * torch.sin(a), torch.sin(e), torch.cos(e) * torch.cos(a)], -1)
    forward = -centre                                            # unit: camera -> origin
    up = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype).expand_as(forward)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up, dim=-1), dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    return torch.stack([right, down, forward], dim=-2)


def sample_cameras(n: int, generator: torch.Generator | None = None, azimuth=(-180.0, 180.0),
                   elevation=(-5.0, 25.0), distance=(4000.0, 6000.0), focal=(900.0, 1100.0),
                   principal=(500.0, 500.0), aim_jitter_mm: float = 300.0) -> dict:
    """Random viewpoints around the person: rotation (N,3,3), true translation (N,3) mm, focal (N,1), principal (N,2).

    The camera looks at a point up to ``aim_jitter_mm`` from the pelvis, so the person is not always at
    the image centre; ranges are uniform. The translation is kept for reference only (see module doc).
    """
    def uni(lo_hi, size=(n,)):
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
        return lo + (hi - lo) * torch.rand(size, generator=generator)

    R = look_at(uni(azimuth), uni(elevation))
    dist = uni(distance)
    aim = (torch.rand(n, 3, generator=generator) * 2 - 1) * aim_jitter_mm
    # Camera centre = aim - dist * forward; the root (world origin) in camera coordinates is R (0 - centre).
    forward = R[:, 2, :]
    centre = aim - dist[:, None] * forward
    t = -(R @ centre.unsqueeze(-1)).squeeze(-1)
    f = uni(focal).unsqueeze(-1)
    c = torch.tensor([float(principal[0]), float(principal[1])]).expand(n, 2).clone()
    return {"rotation": R, "translation": t, "focal": f, "principal": c}


def to_camera(pose: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Root-centred world joints (N, J, 3) -> root-centred camera-oriented joints R p."""
    return pose @ rotation.transpose(-1, -2)


def project(points_cam: torch.Tensor, focal: torch.Tensor, principal: torch.Tensor) -> torch.Tensor:
    """Camera points (N, J, 3) mm -> pixels (N, J, 2); depths below 10 cm are clamped (no division by ~0)."""
    z = points_cam[..., 2:3].clamp_min(MIN_DEPTH_MM)
    return focal.view(-1, 1, 1) * points_cam[..., :2] / z + principal.view(-1, 1, 2)


def solve_translation(q: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor, focal: torch.Tensor,
                      principal: torch.Tensor, prior_depth_mm: float = 5000.0, ridge: float = 1e-6) -> torch.Tensor:
    """Translation t (N, 3) mm placing camera-oriented joints q (N, J, 3) so they project onto ``keypoints``.

    For a joint with normalized image coordinates (a, b) = (kp - c) / f, perspective asks
    q_x + t_x = a (q_z + t_z) and q_y + t_y = b (q_z + t_z): two equations linear in t. Their weighted
    least-squares solution (3x3 normal equations, differentiable) is exact for exact keypoints. A tiny
    ridge towards (0, 0, ``prior_depth_mm``) keeps it defined when fewer than two joints are visible.
    """
    ab = (keypoints - principal.view(-1, 1, 2)) / focal.view(-1, 1, 1)
    a, b = ab[..., 0], ab[..., 1]
    w = weights
    sw = w.sum(-1)
    one = torch.ones_like(a)
    # sum_j w_j A_j^T A_j with A_j = [[1, 0, -a], [0, 1, -b]]
    m00 = sw
    m02 = -(w * a).sum(-1)
    m12 = -(w * b).sum(-1)
    m22 = (w * (a * a + b * b)).sum(-1)
    zero = torch.zeros_like(sw)
    M = torch.stack([torch.stack([m00, zero, m02], -1), torch.stack([zero, m00, m12], -1),
                     torch.stack([m02, m12, m22], -1)], -2)
    rx = a * q[..., 2] - q[..., 0]
    ry = b * q[..., 2] - q[..., 1]
    rhs = torch.stack([(w * rx).sum(-1), (w * ry).sum(-1), -(w * (a * rx + b * ry)).sum(-1)], -1)
    lam = ridge * (sw + 1.0)
    M = M + lam.view(-1, 1, 1) * torch.eye(3, dtype=q.dtype, device=q.device)
    prior = torch.stack([zero, zero, prior_depth_mm * one[..., 0]], -1)
    rhs = rhs + lam.view(-1, 1) * prior
    return torch.linalg.solve(M, rhs.unsqueeze(-1)).squeeze(-1)


def weak_perspective_depth(q: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor,
                           focal: torch.Tensor) -> torch.Tensor:
    """(N,) depth at which q's spread across the image plane matches the keypoints' spread: f * rms(q_xy) / rms(kp)."""
    w = weights.unsqueeze(-1)
    sw = weights.sum(-1).clamp_min(1e-6).view(-1, 1, 1)

    def rms(p):
        centred = p - (w * p).sum(-2, keepdim=True) / sw
        return ((w * centred ** 2).sum((-1, -2)) / sw.view(-1)).sqrt()

    return focal.view(-1) * rms(q[..., :2]) / rms(keypoints).clamp_min(1e-3)


def place(q: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor, focal: torch.Tensor,
          principal: torch.Tensor, floor: float = 0.5, softness_mm: float = 100.0) -> torch.Tensor:
    """The translation used by the loss: least squares, but never nearer than ``floor`` x the weak-perspective depth.

    For a pose close to the truth the least-squares depth is right and the floor is inactive (the
    smooth max differs from it by < 1e-9 mm once it is 2.5 m clear). For a pose facing the wrong way the
    least-squares depth can be tiny or negative (the pose's x is anti-correlated with the keypoints'),
    which would put joints behind the camera and make the loss and its gradients explode; the floor
    keeps every candidate at a plausible distance. t_x, t_y are then the least-squares values for that depth.
    """
    t = solve_translation(q, keypoints, weights, focal, principal)
    low = floor * weak_perspective_depth(q, keypoints, weights, focal)
    tz = low + torch.nn.functional.softplus(t[..., 2] - low, beta=1.0 / softness_mm)
    ab = (keypoints - principal.view(-1, 1, 2)) / focal.view(-1, 1, 1)
    sw = weights.sum(-1).clamp_min(1e-6)
    txy = (weights.unsqueeze(-1) * (ab * (q[..., 2:3] + tz.view(-1, 1, 1)) - q[..., :2])).sum(-2) / sw.unsqueeze(-1)
    return torch.cat([txy, tz.unsqueeze(-1)], -1)


def place_and_project(pose: torch.Tensor, camera: dict, keypoints: torch.Tensor, weights: torch.Tensor):
    """Root-centred world poses -> (pixels (N, J, 2), camera-frame joints (N, J, 3) at the solved translation)."""
    q = to_camera(pose, camera["rotation"])
    t = place(q, keypoints, weights, camera["focal"], camera["principal"])
    pts = q + t.unsqueeze(-2)
    return project(pts, camera["focal"], camera["principal"]), pts
