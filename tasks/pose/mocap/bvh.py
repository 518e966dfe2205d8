"""Biovision BVH clips (the format most users' motion comes in): parse, forward kinematics, 17 joints.

Own parser (no dependency): HIERARCHY of ROOT/JOINT blocks with OFFSET, CHANNELS and End Site, then
MOTION with ``Frames:``, ``Frame Time:`` and one line of values per frame. Conventions:

* A joint's rotation is the product of its rotation channels in the order listed
  (``Zrotation Xrotation Yrotation`` -> Rz Rx Ry), angles in degrees.
* G_joint = G_parent R_joint; position = parent position + G_parent t_joint, where t_joint is the
  OFFSET, except that components given by position channels (``Xposition`` ...) replace the
  OFFSET's (the root's channels are its absolute position, as Blender and MotionBuilder read them).
* End Sites become joints named ``<parent>_end`` (so a head's top is ``Head_end``).
* Units are the file's; ``bvh_to_joints17`` takes ``mm_per_unit`` to give millimetres.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from tasks.pose.mocap.asf import MocapError
from tasks.pose.mocap.kinematics import JOINT_NAMES_17, euler_to_matrix

CHANNEL_NAMES = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")


@dataclass(frozen=True, eq=False)
class BvhJoint:
    """One joint; ``parent`` indexes ``Bvh.joints`` (-1: root); ``channels`` as in the file (canonical case)."""

    name: str
    parent: int
    offset: np.ndarray
    channels: tuple[str, ...] = ()
    end_site: bool = False


@dataclass(frozen=True, eq=False)
class Bvh:
    """A parsed BVH: joints in file order (parents first), ``channels`` (frames, n_channels) float64."""

    joints: tuple[BvhJoint, ...]
    channels: np.ndarray
    frame_time: float
    source: str = "<string>"

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def parents(self) -> list[int]:
        return [j.parent for j in self.joints]

    @property
    def n_channels(self) -> int:
        return sum(len(j.channels) for j in self.joints)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def channel_offsets(self) -> list[int]:
        out, col = [], 0
        for j in self.joints:
            out.append(col)
            col += len(j.channels)
        return out

    def __len__(self) -> int:
        return len(self.channels)


def read_bvh(path: str | Path) -> Bvh:
    """Parse a BVH file; raises ``MocapError`` naming the file, line and problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise MocapError(f"{path}: cannot read BVH file ({e.strerror or e})") from e
    return parse_bvh(text, source=str(path))


_KEYWORDS = {"HIERARCHY", "ROOT", "JOINT", "END", "OFFSET", "CHANNELS", "{", "}"}


def _statements(lines: list[str], source: str):
    """(line number, keyword, rest) per statement up to MOTION; a line may hold several (``{ OFFSET 0 1 0``)."""
    for no, raw in enumerate(lines, start=1):
        tokens = raw.replace("{", " { ").replace("}", " } ").split()
        if tokens and tokens[0].upper() == "MOTION":
            return
        i = 0
        while i < len(tokens):
            key, rest = tokens[i], []
            i += 1
            if key.upper() in ("ROOT", "JOINT") and i < len(tokens) and tokens[i] not in "{}":
                rest.append(tokens[i])                 # the name, even if it looks like a keyword
                i += 1
            while i < len(tokens) and tokens[i].upper() not in _KEYWORDS:
                rest.append(tokens[i])
                i += 1
            yield no, key, " ".join(rest)


def _numbers(text: str, n: int | None, what: str, where: str) -> list[float]:
    tok = text.split()
    if n is not None and len(tok) != n:
        raise MocapError(f"{where}: {what} needs {n} numbers, got {len(tok)}")
    try:
        values = [float(t) for t in tok]
    except ValueError:
        raise MocapError(f"{where}: {what} has a non-number: {text[:60]!r}") from None
    if not all(np.isfinite(values)):
        raise MocapError(f"{where}: {what} has a non-finite value")
    return values


def _hierarchy(lines: list[str], source: str) -> tuple[list[BvhJoint], int]:
    """Joints, and the index of the MOTION line."""
    motion_at = next((i for i, l in enumerate(lines) if l.strip().upper().startswith("MOTION")), None)
    if motion_at is None:
        raise MocapError(f"{source}: no MOTION section (file truncated?)")
    joints: list[BvhJoint] = []
    stack: list[int] = []                       # open joint blocks
    pending: tuple[str, int, bool] | None = None  # joint declared, its '{' not yet seen
    fields: dict[int, dict] = {}
    state = "start"
    for no, key, rest in _statements(lines, source):
        where = f"{source}, line {no}"
        upper = key.upper()
        if state == "start":
            if upper != "HIERARCHY":
                raise MocapError(f"{where}: expected HIERARCHY, got {key!r} (not a BVH file?)")
            state = "root"
            continue
        if state == "done":
            raise MocapError(f"{where}: {key!r} after the root's closing brace (only one ROOT is supported)")
        if pending is not None:
            if key != "{":
                raise MocapError(f"{where}: expected '{{' after {pending[0]!r}, got {key!r}")
            name, parent, end = pending
            fields[len(joints)] = {"line": no}
            joints.append(BvhJoint(name=name, parent=parent, offset=None, end_site=end))
            stack.append(len(joints) - 1)
            pending = None
            continue
        if upper in ("ROOT", "JOINT") or (upper == "END" and rest.upper() == "SITE"):
            if (upper == "ROOT") != (state == "root"):
                raise MocapError(f"{where}: {key} where {'ROOT' if state == 'root' else 'JOINT/End Site'} was expected")
            if stack and joints[stack[-1]].end_site:
                raise MocapError(f"{where}: {key} inside an End Site")
            parent = stack[-1] if stack else -1
            if upper == "END":
                name = f"{joints[parent].name}_end"
                taken = {j.name for j in joints}
                k = 2
                while name in taken:
                    name, k = f"{joints[parent].name}_end{k}", k + 1
            else:
                name = rest
                if not name:
                    raise MocapError(f"{where}: {key} without a name")
                if name in {j.name for j in joints}:
                    raise MocapError(f"{where}: joint name {name!r} used twice")
            pending, state = (name, parent, upper == "END"), "body"
            continue
        if not stack:
            raise MocapError(f"{where}: {key!r} outside any joint")
        cur = stack[-1]
        if upper == "OFFSET":
            if "offset" in fields[cur]:
                raise MocapError(f"{where}: second OFFSET in {joints[cur].name!r}")
            fields[cur]["offset"] = np.array(_numbers(rest, 3, "OFFSET", where))
        elif upper == "CHANNELS":
            if joints[cur].end_site:
                raise MocapError(f"{where}: CHANNELS inside an End Site")
            tok = rest.split()
            if not tok or not tok[0].isdigit():
                raise MocapError(f"{where}: CHANNELS needs a count then names, got {rest!r}")
            n, names = int(tok[0]), tok[1:]
            if len(names) != n:
                raise MocapError(f"{where}: CHANNELS says {n} channels but lists {len(names)}: {' '.join(names)}")
            canon = {c.lower(): c for c in CHANNEL_NAMES}
            bad = [c for c in names if c.lower() not in canon]
            if bad:
                raise MocapError(f"{where}: unknown channel(s) {bad} (expected {', '.join(CHANNEL_NAMES)})")
            chans = tuple(canon[c.lower()] for c in names)
            if len(set(chans)) != len(chans):
                raise MocapError(f"{where}: repeated channel in {rest!r}")
            fields[cur]["channels"] = chans
        elif key == "}":
            stack.pop()
            f = fields[cur]
            if "offset" not in f:
                raise MocapError(f"{source}, line {f['line']}: joint {joints[cur].name!r} has no OFFSET")
            joints[cur] = BvhJoint(name=joints[cur].name, parent=joints[cur].parent, offset=f["offset"],
                                   channels=f.get("channels", ()), end_site=joints[cur].end_site)
            if not stack:
                state = "done"
        else:
            raise MocapError(f"{where}: unexpected {key!r} in joint {joints[cur].name!r}")
    if state != "done" or stack or pending:
        open_ = joints[stack[-1]].name if stack else (pending[0] if pending else "HIERARCHY")
        raise MocapError(f"{source}: HIERARCHY ends before {open_!r} is closed (missing '}}' or truncated)")
    return joints, motion_at


def _header_value(lines: list[str], i: int, label: str, source: str) -> str:
    if i >= len(lines):
        raise MocapError(f"{source}: MOTION section ends before '{label}' (file truncated?)")
    line = lines[i].strip()
    if not line.lower().replace(" ", "").startswith(label.lower().replace(" ", "")):
        raise MocapError(f"{source}, line {i + 1}: expected '{label} ...', got {line[:40]!r}")
    return line.split(":", 1)[1].strip()


def parse_bvh(text: str, source: str = "<string>") -> Bvh:
    """Parse BVH text (see ``read_bvh``); ``source`` names the file in errors."""
    lines = text.splitlines()
    joints, m = _hierarchy(lines, source)
    frames_text = _header_value(lines, m + 1, "Frames:", source)
    if not frames_text.isdigit():
        raise MocapError(f"{source}, line {m + 2}: Frames must be a whole number, got {frames_text!r}")
    n_frames = int(frames_text)
    time_text = _header_value(lines, m + 2, "Frame Time:", source)
    frame_time = _numbers(time_text, 1, "Frame Time", f"{source}, line {m + 3}")[0]
    if frame_time <= 0:
        raise MocapError(f"{source}, line {m + 3}: Frame Time must be positive, got {frame_time}")
    n_ch = sum(len(j.channels) for j in joints)
    rows = []
    for i in range(m + 3, len(lines)):
        if not lines[i].strip():
            continue
        if len(rows) == n_frames:
            raise MocapError(f"{source}, line {i + 1}: more frame lines than the declared Frames: {n_frames}")
        values = _numbers(lines[i], None, "frame", f"{source}, line {i + 1}")
        if len(values) != n_ch:
            raise MocapError(f"{source}, line {i + 1}: frame {len(rows) + 1} has {len(values)} values, the "
                             f"HIERARCHY declares {n_ch} channels")
        rows.append(values)
    if len(rows) != n_frames:
        raise MocapError(f"{source}: MOTION declares Frames: {n_frames} but has {len(rows)} frame lines "
                         f"(file truncated?)")
    channels = np.asarray(rows, dtype=np.float64).reshape(n_frames, n_ch)
    return Bvh(joints=tuple(joints), channels=channels, frame_time=frame_time, source=source)


def bvh_forward_kinematics(bvh: Bvh, channels: torch.Tensor | None = None) -> torch.Tensor:
    """Global positions (..., J, 3) of every joint (End Sites included) in the file's units.

    ``channels`` (..., n_channels) defaults to the file's frames (float64); differentiable.
    """
    ch = torch.as_tensor(bvh.channels if channels is None else channels)
    if not ch.is_floating_point():
        ch = ch.double()
    if ch.shape[-1] != bvh.n_channels:
        raise ValueError(f"{bvh.source}: channels have {ch.shape[-1]} columns, the HIERARCHY declares "
                         f"{bvh.n_channels}")
    batch = ch.shape[:-1]
    eye = torch.eye(3, dtype=ch.dtype, device=ch.device).expand(*batch, 3, 3)
    G, P = [], []
    for j, off in zip(bvh.joints, bvh.channel_offsets()):
        t = [torch.as_tensor(float(v), dtype=ch.dtype, device=ch.device).expand(batch) for v in j.offset]
        rot_cols, rot_axes = [], ""
        for k, c in enumerate(j.channels):
            if c.endswith("position"):
                t["XYZ".index(c[0])] = ch[..., off + k]
            else:
                rot_cols.append(off + k)
                rot_axes += c[0]
        t = torch.stack(t, dim=-1)
        R = euler_to_matrix(ch[..., rot_cols], rot_axes) if rot_axes else eye
        if j.parent == -1:
            G.append(R)
            P.append(t)
        else:
            G.append(G[j.parent] @ R)
            P.append(P[j.parent] + (G[j.parent] @ t.unsqueeze(-1)).squeeze(-1))
    return torch.stack(P, dim=-2)


BVH_JOINTS17_CMU: dict[str, tuple[str, ...]] = {
    "pelvis": ("Hips", "hip"),
    "r_hip": ("RightUpLeg", "rThigh"),
    "r_knee": ("RightLeg", "rShin"),
    "r_ankle": ("RightFoot", "rFoot"),
    "l_hip": ("LeftUpLeg", "lThigh"),
    "l_knee": ("LeftLeg", "lShin"),
    "l_ankle": ("LeftFoot", "lFoot"),
    "spine": ("Spine1", "chest", "Spine"),
    "thorax": ("Neck", "neck"),
    "neck": ("Head", "head"),
    "head_top": ("Head_end", "head_end", "HeadTop_End", "Head"),
    "l_shoulder": ("LeftArm", "lShldr"),
    "l_elbow": ("LeftForeArm", "lForeArm"),
    "l_wrist": ("LeftHand", "lHand"),
    "r_shoulder": ("RightArm", "rShldr"),
    "r_elbow": ("RightForeArm", "rForeArm"),
    "r_wrist": ("RightHand", "rHand"),
}
"""Default BVH joint for each of the 17 joints: the first candidate present wins.

BVH joints sit where a segment STARTS, so the ASF bone END of ``JOINTS17_ASF`` is the START of the
next segment: CMU-style BVH (cgspeed: Hips, LHipJoint, LeftUpLeg, LeftLeg, LeftFoot, LowerBack, Spine,
Spine1, Neck, Neck1, Head, LeftShoulder, LeftArm, LeftForeArm, LeftHand ...) puts LeftUpLeg at the hip,
LeftLeg at the knee, LeftFoot at the ankle, Spine1 at upperback's end, Neck at thorax's end, Head at
upperneck's end, Head's End Site at the head top, LeftArm at the shoulder, LeftHand at the wrist. The
second names are cgspeed's Daz-friendly release (hip, abdomen, chest, neck, head, lThigh, lShin ...).
A ``prefix:`` (e.g. Mixamo's ``mixamorig:``) is ignored when matching.
"""


def bvh_joints17_indices(bvh: Bvh, mapping: Mapping[str, str | Sequence[str]] | None = None) -> list[int]:
    """Index in ``bvh.joints`` of each of ``JOINT_NAMES_17`` under ``mapping`` (default ``BVH_JOINTS17_CMU``)."""
    mapping = BVH_JOINTS17_CMU if mapping is None else mapping
    missing_keys = [j for j in JOINT_NAMES_17 if j not in mapping]
    if missing_keys:
        raise MocapError(f"{bvh.source}: joint mapping lacks {missing_keys} (needs all of {list(JOINT_NAMES_17)})")
    index = {}
    for i, name in enumerate(bvh.names):
        index.setdefault(name, i)
        index.setdefault(name.rsplit(":", 1)[-1], i)
    out = []
    for joint in JOINT_NAMES_17:
        candidates = (mapping[joint],) if isinstance(mapping[joint], str) else tuple(mapping[joint])
        hit = next((index[c] for c in candidates if c in index), None)
        if hit is None:
            raise MocapError(f"{bvh.source}: no BVH joint for {joint!r} (tried {list(candidates)}; the file has "
                             f"{bvh.names}); pass mapping={{'{joint}': '<name>', ...}}")
        out.append(hit)
    return out


def bvh_to_joints17(bvh: Bvh, mapping: Mapping[str, str | Sequence[str]] | None = None,
                    channels: torch.Tensor | None = None, mm_per_unit: float = 1.0,
                    centre: bool = True) -> torch.Tensor:
    """(..., 17, 3) joints in mm (file units * ``mm_per_unit``), pelvis at 0 unless ``centre=False``."""
    points = bvh_forward_kinematics(bvh, channels)[..., bvh_joints17_indices(bvh, mapping), :] * mm_per_unit
    return points - points[..., :1, :] if centre else points
