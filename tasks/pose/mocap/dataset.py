"""Pose sets from the CMU subset: a subject-disjoint split (index.csv), subsampled, as 17 root-centred joints in mm.

Nothing is cached: parsing all 70k frames takes a few seconds, and a cache would be one more thing
to go stale when the data folder changes.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.pose.mocap.amc import read_amc
from tasks.pose.mocap.asf import MocapError, Skeleton, read_asf
from tasks.pose.mocap.kinematics import forward_kinematics, joints17

ENV_VAR = "LANDSCAPE_MOCAP"
DEFAULT_ROOT = Path("data/mocap-cmu")


def mocap_root(root: str | Path | None = None) -> Path:
    """The data folder: ``root``, else ``$LANDSCAPE_MOCAP``, else ``data/mocap-cmu``; it must hold index.csv."""
    if root is not None:
        path, how = Path(root), "the root argument"
    elif os.environ.get(ENV_VAR):
        path, how = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        path, how = DEFAULT_ROOT, f"the default (no root argument, ${ENV_VAR} unset)"
    if not (path / "index.csv").is_file():
        raise MocapError(
            f"CMU mocap data not found: {path.resolve()} (from {how}) has no index.csv. Put the CMU ASF/AMC "
            f"layout there (<SS>/<SS>.asf, <SS>/<SS>_<TT>.amc and index.csv with columns file,subject,trial,"
            f"frames,split,description), or point ${ENV_VAR} or root= at it; on this project's machines it is "
            f"../shared/data/mocap-cmu")
    return path


@dataclass(frozen=True)
class Clip:
    """One row of index.csv."""

    file: str            # e.g. "02/02_01.amc", relative to the root
    subject: str
    trial: str
    frames: int
    split: str
    description: str

    @property
    def name(self) -> str:
        return Path(self.file).stem


def read_index(root: str | Path | None = None) -> list[Clip]:
    """The clips listed in ``<root>/index.csv``."""
    path = mocap_root(root) / "index.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"file", "subject", "trial", "frames", "split", "description"}
        if not need <= set(reader.fieldnames or ()):
            raise MocapError(f"{path}: needs columns {sorted(need)}, has {reader.fieldnames}")
        clips = []
        for line, row in enumerate(reader, start=2):
            try:
                clips.append(Clip(row["file"], row["subject"], row["trial"], int(row["frames"]), row["split"],
                                  row["description"]))
            except (TypeError, ValueError):
                raise MocapError(f"{path}, line {line}: bad row {row}") from None
    return clips


@dataclass(frozen=True, eq=False)
class PoseSet:
    """Subsampled frames of a split. ``poses`` (N, 17, 3) float32 mm, pelvis at 0 (``JOINT_NAMES_17`` order);
    ``channels`` (N, 62) float64 AMC rows (translations mm, angles degrees; interpret with ``skeletons``
    of that row's ``subject``); ``clip`` and ``frame`` (the AMC frame number, from 1) identify each row."""

    poses: torch.Tensor
    channels: np.ndarray
    clip: np.ndarray
    frame: np.ndarray
    subject: np.ndarray
    skeletons: dict[str, Skeleton]

    def __len__(self) -> int:
        return len(self.poses)


def load_split(split: str = "train", root: str | Path | None = None, every: int = 8,
               subjects: list[str] | None = None) -> PoseSet:
    """Frames 1, 1 + every, ... of every clip of ``split`` ("train", "test" or "all") in index.csv.

    ``subjects`` (e.g. ["02", "10"]) narrows further, e.g. to hold out a validation subject.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    base = mocap_root(root)
    clips = [c for c in read_index(base) if split == "all" or c.split == split]
    if subjects is not None:
        clips = [c for c in clips if c.subject in set(subjects)]
    if not clips:
        raise MocapError(f"{base / 'index.csv'}: no clips for split={split!r}, subjects={subjects}")
    skeletons: dict[str, Skeleton] = {}
    poses, channels, names, frames, subj = [], [], [], [], []
    for c in clips:
        if c.subject not in skeletons:
            skeletons[c.subject] = read_asf(base / c.subject / f"{c.subject}.asf")
        sk = skeletons[c.subject]
        motion = read_amc(base / c.file, sk)
        if len(motion) != c.frames:
            raise MocapError(f"{base / c.file}: has {len(motion)} frames, index.csv says {c.frames}")
        rows = motion.channels[::every]
        with torch.no_grad():
            poses.append(joints17(forward_kinematics(sk, torch.from_numpy(rows)), sk).float())
        channels.append(rows)
        names += [c.name] * len(rows)
        frames.append(motion.frames[::every])
        subj += [c.subject] * len(rows)
    return PoseSet(poses=torch.cat(poses), channels=np.concatenate(channels), clip=np.array(names),
                   frame=np.concatenate(frames), subject=np.array(subj), skeletons=skeletons)
