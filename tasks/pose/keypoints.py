"""Users' 2D keypoint files in, 3D joints out (``landscape invert --task pose-cmu --keypoints FILE``).

Input: ``.npz`` or ``.json`` with

  keypoints        (F, J, 2) or (J, 2) pixels (u right, v down), F frames of one person, one camera
  joint_names      J names (see below) -- or joint_order: "h36m17" | "coco17"
  focal_length     f in pixels, or [fx, fy]
  principal_point  [cx, cy] pixels
  confidence       optional (F, J) in [0, 1]; 0 marks a missing joint (its coordinates are ignored but
                   must still be finite numbers); default 1
  camera_rotation  optional 3x3 world -> camera rotation (world Y up); default a level camera. Only the
                   camera's tilt matters: the heading of the person is part of the pose.

Joint names: the 17 of ``JOINT_NAMES_17`` (Human3.6M order: pelvis, r_hip, r_knee, r_ankle, l_hip, l_knee,
l_ankle, spine, thorax, neck, head_top, l_shoulder, l_elbow, l_wrist, r_shoulder, r_elbow, r_wrist; "l"
is the person's left), in any order and any subset; or the COCO-17 names (nose, left_eye, right_eye,
left_ear, right_ear, left_shoulder, right_shoulder, left_elbow, right_elbow, left_wrist, right_wrist,
left_hip, right_hip, left_knee, right_knee, left_ankle, right_ankle). COCO maps limb joints one to
one; pelvis = midpoint of the hips, thorax = midpoint of the shoulders (approximate: CMU's thorax
point sits at the base of the neck); spine, neck and head_top are missing; face points are unused.

Output ``<stem>_3d.npz``: joints3d_camera (F, 17, 3) mm in the camera frame (x right, y down, z
forward, at the estimated position), joints3d_world (F, 17, 3) mm root-centred, Y up (the world of
``camera_rotation``), translation (F, 3) mm, keypoints_reprojected (F, 17, 2), err2d_px (F,) mean over
the joints given, joint_names (17,), latent (F, d).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.io import atomic_write, atomic_write_text
from tasks.pose.camera import look_at
from tasks.pose.mocap import JOINT_NAMES_17

COCO17 = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle")
PRESETS = {"h36m17": JOINT_NAMES_17, "coco17": COCO17}
COCO_TO_17 = {"l_shoulder": "left_shoulder", "r_shoulder": "right_shoulder", "l_elbow": "left_elbow",
              "r_elbow": "right_elbow", "l_wrist": "left_wrist", "r_wrist": "right_wrist", "l_hip": "left_hip",
              "r_hip": "right_hip", "l_knee": "left_knee", "r_knee": "right_knee", "l_ankle": "left_ankle",
              "r_ankle": "right_ankle"}
MIDPOINTS = {"pelvis": ("left_hip", "right_hip"), "thorax": ("left_shoulder", "right_shoulder")}


class KeypointError(LandscapeError, ValueError):
    """A keypoint file that cannot be used; the message names the file and the problem."""


@dataclass
class Keypoints:
    """Keypoints mapped onto the 17 joints: (F, 17, 2) px, weights (F, 17), one camera."""

    keypoints: torch.Tensor
    weights: torch.Tensor
    focal: float
    principal: tuple
    rotation: torch.Tensor
    source: str


# -- reading and writing ----------------------------------------------------------------------------------
def _load_raw(path: Path) -> dict:
    if not path.is_file():
        raise KeypointError(f"{path}: keypoint file not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:
            raise KeypointError(f"{path}: cannot read as .npz ({exc})") from None
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KeypointError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise KeypointError(f"{path}: the JSON must hold an object with keypoints, joint_names, focal_length, "
                                f"principal_point")
        return data
    raise KeypointError(f"{path}: unknown keypoint file type {suffix!r}; use .npz or .json")


def _array(raw: dict, key: str, path: Path, required: bool = True):
    if key not in raw or raw[key] is None:
        if required:
            raise KeypointError(f"{path}: missing {key!r} (needs keypoints, joint_names or joint_order, "
                                f"focal_length, principal_point)")
        return None
    try:
        return np.asarray(raw[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise KeypointError(f"{path}: {key!r} is not an array of numbers") from None


def _names(raw: dict, path: Path) -> list[str]:
    if "joint_names" in raw and raw["joint_names"] is not None:
        names = [str(n) for n in np.asarray(raw["joint_names"]).reshape(-1).tolist()]
    elif "joint_order" in raw and raw["joint_order"] is not None:
        order = str(np.asarray(raw["joint_order"]).reshape(-1)[0])
        if order not in PRESETS:
            raise KeypointError(f"{path}: unknown joint_order {order!r}; valid: {', '.join(PRESETS)}")
        names = list(PRESETS[order])
    else:
        raise KeypointError(f"{path}: name the joint order: give joint_names (J names) or joint_order "
                            f"({' | '.join(PRESETS)})")
    known = set(JOINT_NAMES_17) | set(COCO17)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeypointError(f"{path}: unknown joint names {unknown}; use the 17 names {list(JOINT_NAMES_17)} "
                            f"or the COCO-17 names {list(COCO17)}")
    if len(set(names)) != len(names):
        raise KeypointError(f"{path}: joint_names repeat a name: {names}")
    return names


def read_keypoints(path: str | Path) -> Keypoints:
    """Read and check a keypoint file; every problem is a ``KeypointError`` naming the file."""
    path = Path(path)
    raw = _load_raw(path)
    names = _names(raw, path)
    kp = _array(raw, "keypoints", path)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[-1] != 2 or kp.shape[0] < 1:
        raise KeypointError(f"{path}: keypoints must be (frames, joints, 2) pixels, got shape {kp.shape}")
    if kp.shape[1] != len(names):
        raise KeypointError(f"{path}: wrong joint count: keypoints have {kp.shape[1]} joints but the joint order "
                            f"names {len(names)}")
    if not np.isfinite(kp).all():
        bad = np.argwhere(~np.isfinite(kp))[0]
        raise KeypointError(f"{path}: keypoints contain NaN or infinite values (first at frame {bad[0]}, joint "
                            f"{names[bad[1]]!r}); mark a missing joint with confidence 0 and any finite coordinates")
    conf = _array(raw, "confidence", path, required=False)
    if conf is None:
        conf = np.ones(kp.shape[:2])
    if conf.ndim == 1:
        conf = conf[None]
    if conf.shape != kp.shape[:2]:
        raise KeypointError(f"{path}: confidence must be (frames, joints) = {kp.shape[:2]}, got {conf.shape}")
    if not np.isfinite(conf).all():
        raise KeypointError(f"{path}: confidence contains NaN or infinite values")
    if (conf < 0).any() or (conf > 1).any():
        raise KeypointError(f"{path}: confidence must lie in [0, 1], got values from {conf.min()} to {conf.max()}")
    f = _array(raw, "focal_length", path).reshape(-1)
    if f.size not in (1, 2) or not np.isfinite(f).all() or (f <= 0).any():
        raise KeypointError(f"{path}: focal_length must be one or two positive finite numbers (pixels), got "
                            f"{f.tolist()}")
    c = _array(raw, "principal_point", path).reshape(-1)
    if c.size != 2 or not np.isfinite(c).all():
        raise KeypointError(f"{path}: principal_point must be two finite numbers [cx, cy] (pixels), got {c.tolist()}")
    if f.size == 2:  # non-square pixels: rescale v so that one focal length describes the camera
        kp = kp.copy()
        kp[..., 1] = (kp[..., 1] - c[1]) * f[0] / f[1] + c[1]
    R = _array(raw, "camera_rotation", path, required=False)
    if R is None:
        R = look_at(torch.tensor([0.0]), torch.tensor([0.0]))[0].double().numpy()
    elif R.shape != (3, 3) or not np.isfinite(R).all() or not np.allclose(R @ R.T, np.eye(3), atol=1e-4) \
            or np.linalg.det(R) < 0:
        raise KeypointError(f"{path}: camera_rotation must be a 3x3 rotation matrix (world -> camera), got {R.tolist()}")
    kp17, w17 = _map_to_17(kp, conf, names)
    usable = (w17 > 0).sum(1)
    if (usable < 2).any():
        frame = int(np.argmax(usable < 2))
        raise KeypointError(f"{path}: frame {frame} has {int(usable[frame])} usable joint(s) of the 17; at least 2 "
                            f"(with confidence > 0) are needed to place the person")
    return Keypoints(torch.tensor(kp17, dtype=torch.float32), torch.tensor(w17, dtype=torch.float32), float(f[0]),
                     (float(c[0]), float(c[1])), torch.tensor(R, dtype=torch.float32), str(path))


def _map_to_17(kp: np.ndarray, conf: np.ndarray, names: list[str]):
    col = {n: i for i, n in enumerate(names)}
    F = kp.shape[0]
    out, w = np.zeros((F, 17, 2)), np.zeros((F, 17))
    for j, name in enumerate(JOINT_NAMES_17):
        if name in col:
            out[:, j], w[:, j] = kp[:, col[name]], conf[:, col[name]]
        elif COCO_TO_17.get(name) in col:
            out[:, j], w[:, j] = kp[:, col[COCO_TO_17[name]]], conf[:, col[COCO_TO_17[name]]]
        elif name in MIDPOINTS and all(m in col for m in MIDPOINTS[name]):
            a, b = (col[m] for m in MIDPOINTS[name])
            out[:, j] = (kp[:, a] + kp[:, b]) / 2
            w[:, j] = np.minimum(conf[:, a], conf[:, b])
    return out, w


def write_keypoints(path: str | Path, keypoints, joint_names, focal_length, principal_point, confidence=None,
                    camera_rotation=None) -> Path:
    """Write a keypoint file (.npz or .json) that ``read_keypoints`` reads back."""
    path = Path(path)
    data = {"keypoints": np.asarray(keypoints, dtype=np.float64), "joint_names": np.asarray(list(joint_names)),
            "focal_length": np.asarray(focal_length, dtype=np.float64),
            "principal_point": np.asarray(principal_point, dtype=np.float64)}
    if confidence is not None:
        data["confidence"] = np.asarray(confidence, dtype=np.float64)
    if camera_rotation is not None:
        data["camera_rotation"] = np.asarray(camera_rotation, dtype=np.float64)
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps({k: v.tolist() for k, v in data.items()}) + "\n")
    elif path.suffix.lower() == ".npz":
        def write(p):
            with open(p, "wb") as fh:
                np.savez(fh, **data)
        atomic_write(path, write)
    else:
        raise KeypointError(f"{path}: unknown keypoint file type {path.suffix!r}; use .npz or .json")
    return path


# -- reconstruction ---------------------------------------------------------------------------------------
def keypoint_target(kp: Keypoints, frames=slice(None)) -> dict:
    k = kp.keypoints[frames]
    n = len(k)
    return {"keypoints": k, "visibility": kp.weights[frames], "rotation": kp.rotation.expand(n, 3, 3),
            "focal": torch.full((n, 1), kp.focal), "principal": torch.tensor(kp.principal).expand(n, 2)}


def reconstruct(problem, theta, train_cfg: dict, kp: Keypoints, space: str = "Z", hypotheses: int = 8,
                steps: int = 100, warm_steps: int = 30, rule_x: str = "adam", lr_x: float = 0.1, seed: int = 0) -> dict:
    """Frame 0 from ``hypotheses`` starts (the lowest objective wins), then each frame warm-started from the last."""
    from landscape.problem import target_repeat
    from landscape.space import Space

    if space not in ("X", "Z"):
        raise KeypointError(f"keypoints.space must be X or Z, got {space!r}")
    sp = Space(problem, theta if space == "Z" else None)
    rule, lr = (train_cfg["rule"], float(train_cfg["lr_z"])) if space == "Z" else (rule_x, float(lr_x))
    g = torch.Generator().manual_seed(seed)
    F = len(kp.keypoints)
    var_prev, xs = None, []
    for f in range(F):
        target = keypoint_target(kp, slice(f, f + 1))
        if var_prev is None:
            res = sp.descend(target_repeat(target, hypotheses), sp.init(hypotheses, g), steps, lr, rule)
            best = int(torch.argmin(res.losses[-1]))
            var_prev = res.var[best:best + 1]
        else:
            res = sp.descend(target, var_prev, warm_steps, lr, rule)
            var_prev = res.var
        with torch.no_grad():
            xs.append(sp.to_x(var_prev))
    x = torch.cat(xs)
    target = keypoint_target(kp)
    with torch.no_grad():
        pose = problem.forward(x)
        px, cam = problem.reprojection(pose, target)
    vis = (target["visibility"] > 0).float()
    err = ((px - target["keypoints"]).norm(dim=-1) * vis).sum(-1) / vis.sum(-1)
    return {"joints3d_camera": cam, "joints3d_world": pose, "translation": cam[:, 0], "keypoints_reprojected": px,
            "err2d_px": err, "latent": x}


def reconstruct_file(path: str | Path, cfg: dict, out: Path, progress: bool = True) -> dict:
    """Read ``path``, reconstruct with the task's generator and theta, write ``<stem>_3d.npz`` (+ a figure)."""
    from landscape.io import resolve_path as _resolve
    from landscape.trainer import load_theta
    from tasks.pose.generator import load_pose_generator
    from tasks.pose.problem import PoseInversion

    kp = read_keypoints(path)
    k = cfg["keypoints"]
    p = cfg["problem"]
    G = load_pose_generator(_resolve(cfg["generator"]["weights"]))
    empty = torch.zeros(0, 17, 3)
    problem = PoseInversion(G, empty, empty, None, float(p["drop_prob"]), float(p["sigma_px"]),
                            float(p["prior_weight"]), 0.0, int(cfg["seed"]))
    theta, train_cfg = (load_theta(cfg["theta"]["weights"]) if k["space"] == "Z" else (None, {}))
    t0 = time.perf_counter()
    res = reconstruct(problem, theta, train_cfg, kp, k["space"], int(k["hypotheses"]), int(k["steps"]),
                      int(k["warm_steps"]), k["rule_x"], float(k["lr_x"]), int(cfg["seed"]))
    seconds = time.perf_counter() - t0
    out = Path(out)
    dest = out / f"{Path(path).stem}_3d.npz"
    arrays = {name: v.detach().double().numpy() for name, v in res.items()}
    arrays["joint_names"] = np.asarray(JOINT_NAMES_17)

    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(dest, write)
    summary = {"source": str(path), "frames": len(kp.keypoints), "space": k["space"], "seconds": seconds,
               "err2d_mean": float(res["err2d_px"].mean()), "err2d_max": float(res["err2d_px"].max()),
               "path": str(dest)}
    atomic_write_text(out / f"{Path(path).stem}_3d.json", json.dumps(summary, indent=2) + "\n")
    try:
        from tasks.pose.plot import reconstruction_grid

        rows = []
        for f in np.linspace(0, len(kp.keypoints) - 1, min(4, len(kp.keypoints))).round().astype(int).tolist():
            cam = res["joints3d_camera"][f]
            rows.append({"keypoints": kp.keypoints[f], "visibility": kp.weights[f], "truth": cam - cam[:1],
                         "reprojected": res["keypoints_reprojected"][f]})
        reconstruction_grid(rows, [], out / f"{Path(path).stem}_3d.png", f"{Path(path).name}: input and 3D",
                            truth_title="3D reconstruction")
    except Exception as exc:  # a figure is a courtesy; the .npz is the result
        if progress:
            print(f"(no figure: {exc})")
    return summary
