"""Differentiable forward kinematics for ASF skeletons, and the 17-joint (Human3.6M-style) pose used downstream.

Convention (the data README's, checked numerically against CMU/cgspeed BVH): for a bone with
``axis ax ay az XYZ``, C = Rz(az) Ry(ay) Rx(ax); its AMC values give M = Rz(rz) Ry(ry) Rx(rx) (a
missing dof is 0); the local rotation is L = C M C^-1, the global one G = G_parent L, and the bone's
end is the parent's end + G (direction * length). The root has G = Rz(RZ) Ry(RY) Rx(RX) and sits at
(TX, TY, TZ). Generalised the Acclaim way for other files: axis/dof/root-axis letters are listed in the
order applied (first listed = rightmost factor); the ASF root ``position``/``orientation`` (zero in
every CMU file) are not applied. ``fk_from_rotations`` takes the L matrices directly (rotations in
the rest pose's world frame, not M), which is what a network emitting 6D codes should produce.
Everything is plain torch (batched over any leading dims, float32 or float64), so
gradients flow from joint positions back to angles, rotations or 6D codes.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from tasks.pose.mocap.asf import Skeleton

_AXES = "XYZ"


def axis_matrix(angle_rad: torch.Tensor, axis: str) -> torch.Tensor:
    """Right-handed rotation by ``angle_rad`` (any shape S) about X, Y or Z, as (S, 3, 3)."""
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    rows = {"X": ((one, zero, zero), (zero, c, -s), (zero, s, c)),
            "Y": ((c, zero, s), (zero, one, zero), (-s, zero, c)),
            "Z": ((c, -s, zero), (s, c, zero), (zero, zero, one))}[axis.upper()]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def euler_to_matrix(angles_deg: torch.Tensor, order: str) -> torch.Tensor:
    """R = R_{order[0]}(a_0) @ R_{order[1]}(a_1) @ ..., i.e. the product in the order listed (BVH's rule).

    ``angles_deg`` is (..., len(order)) in degrees. Acclaim's "first listed is applied first" (axis XYZ:
    Rz Ry Rx) is ``euler_to_matrix(angles.flip(-1), order[::-1])``.
    """
    angles = torch.deg2rad(torch.as_tensor(angles_deg))
    if angles.shape[-1] != len(order):
        raise ValueError(f"{len(order)} angles needed for order {order!r}, got shape {tuple(angles.shape)}")
    out = axis_matrix(angles[..., 0], order[0])
    for k in range(1, len(order)):
        out = out @ axis_matrix(angles[..., k], order[k])
    return out


def _applied_order(dof: tuple[str, ...]) -> str:
    """Three axes in application order for a bone's dof (missing ones, at angle 0, fill in).

    dof in X<Y<Z order (every CMU bone) gives "XYZ", i.e. M = Rz Ry Rx exactly as the README states.
    """
    present = "".join(d[1].upper() for d in dof)
    if present == "".join(a for a in _AXES if a in present):
        return _AXES
    return present + "".join(a for a in _AXES if a not in present)


def topological_order(parents: list[int]) -> list[int]:
    """Indices ordered so that every parent comes before its children (ASF files need not be)."""
    done, order = set(), []
    pending = list(range(len(parents)))
    while pending:
        rest = [i for i in pending if parents[i] == -1 or parents[i] in done]
        if not rest:
            raise ValueError(f"cycle among parents {parents}")
        for i in rest:
            done.add(i)
            order.append(i)
        pending = [i for i in pending if i not in done]
    return order


@functools.lru_cache(maxsize=64)
def _topo(skeleton: Skeleton) -> list[int]:
    return topological_order(skeleton.parents)


@functools.lru_cache(maxsize=64)
def _constants(skeleton: Skeleton) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (C, offsets) of a skeleton, built once (skeletons are immutable and hash by identity)."""
    mats = []
    for b in skeleton.bones:
        order = b.axis_order[::-1]
        angles = torch.tensor([b.axis[_AXES.index(a)] for a in order], dtype=torch.float64)
        mats.append(euler_to_matrix(angles, order))
    offsets = torch.from_numpy(np.stack([b.direction * b.length for b in skeleton.bones]).astype(np.float64))
    return torch.stack(mats), offsets


def bone_axes(skeleton: Skeleton, like: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) axis rotations C of every bone: C = Rz(az) Ry(ay) Rx(ax) for ``axis ax ay az XYZ``.

    The three numbers are the X, Y, Z angles; the letters give the order they are applied in.
    """
    return _constants(skeleton)[0].to(dtype=like.dtype, device=like.device)


def bone_offsets(skeleton: Skeleton, like: torch.Tensor) -> torch.Tensor:
    """(B, 3) rest-pose bone vectors direction * length, in mm."""
    return _constants(skeleton)[1].to(dtype=like.dtype, device=like.device)


@functools.lru_cache(maxsize=64)
def _dof_groups(skeleton: Skeleton) -> list[tuple[str, tuple[int, ...], list[list[int]]]]:
    """Bones grouped by dof application order, with each bone's three channel columns in that order.

    A missing dof reads column n_dof, which ``channel_rotations`` pads with zeros.
    """
    groups: dict[str, list[int]] = {}
    cols: list[list[int]] = []
    for i, (b, off) in enumerate(zip(skeleton.bones, skeleton.dof_offsets())):
        order = _applied_order(b.dof)
        groups.setdefault(order, []).append(i)
        where = {d[1].upper(): off + k for k, d in enumerate(b.dof)}
        cols.append([where.get(a, skeleton.n_dof) for a in order])
    return [(order, tuple(bones), [cols[i] for i in bones]) for order, bones in groups.items()]


def channel_rotations(skeleton: Skeleton, channels: torch.Tensor):
    """AMC channel rows (..., n_dof) -> (root position (..., 3) mm, root rotation (..., 3, 3), L (..., B, 3, 3)).

    L = C M C^-1 per bone; bones without dof get the identity.
    """
    channels = torch.as_tensor(channels)
    if not channels.is_floating_point():
        channels = channels.double()
    if channels.shape[-1] != skeleton.n_dof:
        raise ValueError(f"{skeleton.source}: channels have {channels.shape[-1]} columns, the skeleton needs "
                         f"{skeleton.n_dof}")
    root_pos = channels[..., 0:3]
    root_angles = channels[..., [3 + _AXES.index(a) for a in skeleton.root_axis[::-1]]]
    root_rot = euler_to_matrix(root_angles, skeleton.root_axis[::-1])
    C = bone_axes(skeleton, channels)
    padded = torch.cat([channels, torch.zeros_like(channels[..., :1])], dim=-1)
    parts = []
    for order, bones, cols in _dof_groups(skeleton):
        angles = padded[..., torch.tensor(cols, device=channels.device)]                # (..., Bg, 3)
        M = euler_to_matrix(angles.flip(-1), order[::-1])                                # (..., Bg, 3, 3)
        Cg = C[list(bones)]
        parts.append(Cg @ M @ Cg.transpose(-1, -2))
    local = torch.cat(parts, dim=-3)
    index = [i for _, bones, _ in _dof_groups(skeleton) for i in bones]
    if index != list(range(len(skeleton.bones))):
        local = local[..., torch.argsort(torch.tensor(index, device=channels.device)), :, :]
    return root_pos, root_rot, local


def fk_from_rotations(skeleton: Skeleton, local: torch.Tensor, root_rot: torch.Tensor | None = None,
                      root_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Points (..., 1 + B, 3) in mm from local rotations L (..., B, 3, 3) in the rest pose's world frame.

    Each bone's end = parent's end + G (direction * length) with G = G_parent L, so any rotation
    matrices (e.g. from ``rot6d_to_matrix``) keep every bone's length. Default root: identity at 0.
    """
    local = torch.as_tensor(local)
    n = len(skeleton.bones)
    if local.shape[-3:] != (n, 3, 3):
        raise ValueError(f"local rotations must be (..., {n}, 3, 3), got {tuple(local.shape)}")
    batch = local.shape[:-3]
    if root_rot is None:
        root_rot = torch.eye(3, dtype=local.dtype, device=local.device).expand(*batch, 3, 3)
    if root_pos is None:
        root_pos = torch.zeros(*batch, 3, dtype=local.dtype, device=local.device)
    offsets = bone_offsets(skeleton, local)
    G: list[torch.Tensor | None] = [None] * n
    P: list[torch.Tensor | None] = [None] * n
    for i in _topo(skeleton):
        p = skeleton.bones[i].parent
        g_parent, p_parent = (root_rot, root_pos) if p == -1 else (G[p], P[p])
        G[i] = g_parent @ local[..., i, :, :]
        P[i] = p_parent + (G[i] @ offsets[i].unsqueeze(-1)).squeeze(-1)
    return torch.stack([root_pos.expand(*batch, 3)] + P, dim=-2)


def forward_kinematics(skeleton: Skeleton, channels: torch.Tensor) -> torch.Tensor:
    """AMC channel rows (..., n_dof) (mm, degrees; see ``amc``) -> points (..., 1 + B, 3) in mm.

    Point 0 is the root, point 1 + i the end of ``skeleton.bones[i]`` (``Skeleton.point_names``).
    """
    root_pos, root_rot, local = channel_rotations(skeleton, channels)
    return fk_from_rotations(skeleton, local, root_rot, root_pos)


def rest_pose(skeleton: Skeleton, dtype=torch.float64) -> torch.Tensor:
    """(1 + B, 3) points of the rest pose (all angles 0, root at the origin), in mm."""
    return forward_kinematics(skeleton, torch.zeros(skeleton.n_dof, dtype=dtype))


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """6D rotation code (..., 6) -> rotation matrix (..., 3, 3) by Gram-Schmidt (Zhou et al., CVPR 2019).

    Columns: b1 = a1/|a1|, b2 = the part of a2 orthogonal to b1, normalised, b3 = b1 x b2. Continuous,
    so a network can output it; the result is always a proper rotation (det +1).
    """
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rot6d_to_matrix`` for rotations: the first two columns, (..., 6)."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


# ---- the 17-joint pose ------------------------------------------------------------------------

JOINT_NAMES_17 = ("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
                  "neck", "head_top", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist")
"""Human3.6M's 17 joints in its order; "l"/"r" are the subject's own left and right."""

JOINTS17_ASF = {
    "pelvis": "root",            # the root (centre of the hips)
    "r_hip": "rhipjoint",        # end of rhipjoint = the right hip joint
    "r_knee": "rfemur",
    "r_ankle": "rtibia",
    "l_hip": "lhipjoint",
    "l_knee": "lfemur",
    "l_ankle": "ltibia",
    "spine": "upperback",        # mid-torso, ~0.23 m above the root (lowerback's end is only ~0.12 m)
    "thorax": "thorax",          # base of the neck, where the clavicles start
    "neck": "upperneck",         # top of the neck / base of the skull
    "head_top": "head",
    "l_shoulder": "lclavicle",   # end of the clavicle = the shoulder joint
    "l_elbow": "lhumerus",
    "l_wrist": "lradius",        # end of the radius = the wrist (CMU's "lwrist" bone is the hand's base)
    "r_shoulder": "rclavicle",
    "r_elbow": "rhumerus",
    "r_wrist": "rradius",
}
"""For each of ``JOINT_NAMES_17``, the ASF point it is: "root", or the END of the named bone."""

JOINT_PARENTS_17 = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)

CMU_POINT_NAMES = ("root", "lhipjoint", "lfemur", "ltibia", "lfoot", "ltoes", "rhipjoint", "rfemur", "rtibia",
                   "rfoot", "rtoes", "lowerback", "upperback", "thorax", "lowerneck", "upperneck", "head",
                   "lclavicle", "lhumerus", "lradius", "lwrist", "lhand", "lfingers", "lthumb", "rclavicle",
                   "rhumerus", "rradius", "rwrist", "rhand", "rfingers", "rthumb")
"""The 31 FK points of every CMU skeleton, in CMU's ASF bone order (all 11 subjects here share it)."""


def joint17_parents() -> list[int]:
    """Parent of each of the 17 joints (-1 for the pelvis): the kinematic tree for drawing skeletons."""
    return list(JOINT_PARENTS_17)


def joints17_indices(skeleton: Skeleton | None = None) -> list[int]:
    """Indices of the 17 joints among FK points: by bone name from ``skeleton``, else CMU's fixed order."""
    names = skeleton.point_names if skeleton is not None else list(CMU_POINT_NAMES)
    missing = [JOINTS17_ASF[j] for j in JOINT_NAMES_17 if JOINTS17_ASF[j] not in names]
    if missing:
        raise ValueError(f"skeleton lacks the bones the 17 joints need: {missing}")
    return [names.index(JOINTS17_ASF[j]) for j in JOINT_NAMES_17]


def joints17(points31: torch.Tensor, skeleton: Skeleton | None = None, centre: bool = True) -> torch.Tensor:
    """FK points (..., 31, 3) -> the 17 joints (..., 17, 3), root-centred (pelvis at 0) unless ``centre=False``.

    Units are those of the points (mm from ``forward_kinematics``).
    """
    points31 = torch.as_tensor(points31)
    n = len(skeleton.bones) + 1 if skeleton is not None else len(CMU_POINT_NAMES)
    if points31.shape[-2:] != (n, 3):
        raise ValueError(f"points must be (..., {n}, 3), got {tuple(points31.shape)}")
    out = points31[..., joints17_indices(skeleton), :]
    return out - out[..., :1, :] if centre else out
