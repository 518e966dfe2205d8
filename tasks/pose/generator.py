"""The pose generator D: a small VAE whose decoder emits joint rotations, posed by forward kinematics.

The decoder outputs one 6D rotation code (Zhou et al. 2019) for the root and for each bone of a fixed
reference skeleton (the mean of the training subjects' CMU skeletons, pruned to the bones above the
17 joints), and ``fk_from_rotations`` turns them into joints. So every output, whatever its latent,
has exactly the reference skeleton's bone lengths: the generator cannot produce a stretched person,
which is what makes it a prior worth inverting. The encoder (joints -> latent) is only needed to
train it. Output: (N, 17, 3) joints in mm, pelvis at 0, Y up (``JOINT_NAMES_17`` order).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from landscape.errors import LandscapeError
from landscape.io import atomic_write, load_tensors
from tasks.pose.mocap import JOINT_NAMES_17, JOINTS17_ASF, fk_from_rotations, joints17_indices, rot6d_to_matrix
from tasks.pose.mocap.asf import Bone, Skeleton

# l/r swap of the 17 joints, for mirror augmentation
MIRROR_17 = [JOINT_NAMES_17.index(n.replace("l_", "#").replace("r_", "l_").replace("#", "r_"))
             for n in JOINT_NAMES_17]
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


#: every key of the command that trains this, with its default
POSE_GENERATOR_DEFAULTS = {
    "seed": 0,
    "threads": 0,
    "data": {"root": None, "every": 4, "heldout_every": 8},   # root: null = $LANDSCAPE_MOCAP, else data/mocap-cmu
    "generator": {"latent_dim": 16, "hidden": 256, "depth": 2},
    "train": {"iterations": 20000, "batch_size": 256, "lr": 1.0e-3, "beta": 1.0, "sigma_mm": 20.0, "warmup": 1000,
              "progress": True},
}

class GeneratorError(LandscapeError, ValueError):
    pass


# -- the reference skeleton ------------------------------------------------------------------------------
def reference_skeleton_state(skeletons: dict) -> dict:
    """Mean bone vectors of ``skeletons`` (all CMU: same bones), pruned to the bones the 17 joints need.

    Returns plain lists/tensors (checkpoint-safe): names, parents (within the pruned list), offsets
    (B, 3) mm and ``free`` (whether the decoder rotates that bone: CMU's hip joints have no dof).
    """
    sks = list(skeletons.values())
    if not sks:
        raise GeneratorError("no skeletons to average")
    first = sks[0]
    needed = set()
    for bone in JOINTS17_ASF.values():
        if bone == "root":
            continue
        i = first.index(bone)
        while i != -1:
            needed.add(i)
            i = first.bones[i].parent
    keep = sorted(needed)
    offsets = []
    for i in keep:
        vecs = []
        for sk in sks:
            if sk.bones[i].name != first.bones[i].name:
                raise GeneratorError(f"{sk.source}: bone {i} is {sk.bones[i].name}, not {first.bones[i].name}")
            vecs.append(sk.bones[i].direction * sk.bones[i].length)
        offsets.append(np.mean(vecs, axis=0))
    names = [first.bones[i].name for i in keep]
    parents = [-1 if first.bones[i].parent == -1 else keep.index(first.bones[i].parent) for i in keep]
    free = [len(first.bones[i].dof) > 0 for i in keep]
    return {"names": names, "parents": parents, "offsets": torch.tensor(np.array(offsets), dtype=torch.float64),
            "free": free}


def skeleton_from_state(state: dict) -> Skeleton:
    bones = []
    for name, parent, off in zip(state["names"], state["parents"], state["offsets"].tolist()):
        off = np.asarray(off, dtype=np.float64)
        length = float(np.linalg.norm(off))
        bones.append(Bone(name=name, parent=int(parent), direction=off / max(length, 1e-12), length=length,
                          axis=np.zeros(3)))
    return Skeleton(name="reference", bones=tuple(bones), mm_per_unit=1.0, source="<pose generator reference>")


# -- the VAE ---------------------------------------------------------------------------------------------
def _mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers[:-1])


class PoseVAE(nn.Module):
    """Encoder joints (N, 17, 3) mm -> (mu, logvar); decoder latent (N, d) -> joints by FK of the reference skeleton."""

    def __init__(self, skeleton_state: dict, latent_dim: int = 16, hidden: int = 256, depth: int = 2):
        super().__init__()
        self.latent_dim, self.hidden, self.depth = int(latent_dim), int(hidden), int(depth)
        self.skeleton_state = {k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in skeleton_state.items()}
        self.skeleton = skeleton_from_state(self.skeleton_state)
        self.free = [i for i, f in enumerate(self.skeleton_state["free"]) if f]
        self.n_bones = len(self.skeleton.bones)
        self.joint_index = joints17_indices(self.skeleton)
        self.encoder = _mlp([51] + [hidden] * depth + [2 * latent_dim])
        self.decoder = _mlp([latent_dim] + [hidden] * depth + [6 * (1 + len(self.free))])
        last = self.decoder[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(IDENTITY_6D).repeat(1 + len(self.free)))

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim, "hidden": self.hidden, "depth": self.depth}

    def encode(self, joints: torch.Tensor):
        h = self.encoder((joints / 1000.0).flatten(1))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 6)

    def rotations(self, z: torch.Tensor):
        """(root rotation (N, 3, 3), local rotations (N, B, 3, 3)) decoded from latents."""
        codes = self.decoder(z).view(len(z), 1 + len(self.free), 6)
        R = rot6d_to_matrix(codes)
        local = torch.eye(3, dtype=R.dtype, device=R.device).repeat(len(z), self.n_bones, 1, 1)
        local[:, self.free] = R[:, 1:]
        return R[:, 0], local

    def points(self, z: torch.Tensor) -> torch.Tensor:
        """All FK points (N, 1 + B, 3) of the reference skeleton: the root, then each bone's end."""
        root_rot, local = self.rotations(z)
        return fk_from_rotations(self.skeleton, local, root_rot)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.points(z)[:, self.joint_index]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)

    def bone_lengths(self) -> dict:
        """Length (mm) of every bone of the reference skeleton: what every output keeps exactly.

        13 of the 17-joint tree's 16 edges are one bone each; pelvis-spine (lowerback + upperback) and
        thorax-neck (lowerneck + upperneck) are two, so they bend like a spine and their length varies.
        """
        return {b.name: float(b.length) for b in self.skeleton.bones}

    def decode_rest(self) -> torch.Tensor:
        local = torch.eye(3, dtype=torch.float32).repeat(1, self.n_bones, 1, 1)
        return fk_from_rotations(self.skeleton, local)[0, self.joint_index]


# -- training --------------------------------------------------------------------------------------------
def random_yaw(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 3, 3) rotations about the vertical (Y) axis by uniform angles: heading is not part of a pose."""
    a = torch.rand(n, generator=generator) * 2 * math.pi
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([torch.stack([c, zero, s], -1), torch.stack([zero, one, zero], -1),
                        torch.stack([-s, zero, c], -1)], -2)


def augment(poses: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random heading, and a left-right mirror for half of the poses (x -> -x, l/r joints swapped)."""
    poses = poses @ random_yaw(len(poses), generator).transpose(-1, -2)
    flip = torch.rand(len(poses), generator=generator) < 0.5
    mirrored = poses[:, MIRROR_17] * torch.tensor([-1.0, 1.0, 1.0])
    return torch.where(flip.view(-1, 1, 1), mirrored, poses)


def vae_loss(model: PoseVAE, poses: torch.Tensor, beta: float, sigma_mm: float,
             generator: torch.Generator | None = None):
    """Negative ELBO per pose with a Gaussian likelihood of std ``sigma_mm`` per coordinate: (loss, MPJPE mm)."""
    mu, logvar = model.encode(poses)
    eps = torch.randn(mu.shape, generator=generator)
    z = mu + eps * (0.5 * logvar).exp()
    rec = model.decode(z)
    nll = ((rec - poses) ** 2).sum((1, 2)) / (2 * sigma_mm ** 2)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
    err = (rec - poses).norm(dim=-1).mean(-1)
    return (nll + beta * kl).mean(), err.mean(), kl.mean()


@torch.no_grad()
def reconstruction_mpjpe(model: PoseVAE, poses: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """Per-pose MPJPE (mm) of decode(mean of encode(pose)): how well the generator covers ``poses``."""
    out = []
    for s in range(0, len(poses), batch):
        p = poses[s:s + batch]
        out.append((model.decode(model.encode(p)[0]) - p).norm(dim=-1).mean(-1))
    return torch.cat(out)


def train_pose_vae(poses: torch.Tensor, skeletons: dict, latent_dim: int = 16, hidden: int = 256, depth: int = 2,
                   iterations: int = 6000, batch_size: int = 256, lr: float = 1e-3, beta: float = 1.0,
                   sigma_mm: float = 20.0, warmup: int = 1000, seed: int = 0, progress: bool = True,
                   log_every: int = 250) -> tuple[PoseVAE, list[dict], float]:
    """Train on root-centred training poses (N, 17, 3) mm; returns (model in eval mode, history, seconds).

    KL weight ramps linearly from 0 to ``beta`` over ``warmup`` iterations (avoids an early collapse of
    the latent); the learning rate decays by cosine to 5% at the end.
    """
    from tqdm.auto import tqdm

    if len(poses) < batch_size:
        raise GeneratorError(f"{len(poses)} training poses, fewer than one batch of {batch_size}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = PoseVAE(reference_skeleton_state(skeletons), latent_dim, hidden, depth)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i, iterations) / iterations)))
    history, t0 = [], time.perf_counter()
    run = {"loss": 0.0, "mpjpe": 0.0, "kl": 0.0, "n": 0}
    bar = tqdm(range(iterations), desc="pose VAE", disable=not progress)
    for it in bar:
        idx = torch.randint(len(poses), (batch_size,), generator=gen)
        batch = augment(poses[idx], gen)
        b = beta * min(1.0, (it + 1) / max(warmup, 1))
        loss, err, kl = vae_loss(model, batch, b, sigma_mm, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        sched.step()
        run["loss"] += loss.item(); run["mpjpe"] += err.item(); run["kl"] += kl.item(); run["n"] += 1
        if (it + 1) % log_every == 0 or it + 1 == iterations:
            row = {"iteration": it + 1, **{k: run[k] / run["n"] for k in ("loss", "mpjpe", "kl")},
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            bar.set_postfix(mpjpe=f"{row['mpjpe']:.1f}", kl=f"{row['kl']:.1f}")
            run = {"loss": 0.0, "mpjpe": 0.0, "kl": 0.0, "n": 0}
    model.eval()
    return model, history, time.perf_counter() - t0


# -- checkpoints -----------------------------------------------------------------------------------------
def save_pose_generator(path: str | Path, model: PoseVAE, info: dict | None = None) -> None:
    state = {"kind": "pose-vae", "state_dict": model.state_dict(), "config": model.config(),
             "skeleton": model.skeleton_state, "joint_names": list(JOINT_NAMES_17), "info": info or {}}
    atomic_write(path, lambda p: torch.save(state, p))


def load_pose_generator(path: str | Path) -> PoseVAE:
    """The VAE in eval mode with frozen parameters; a clear error when the file is missing or not one."""
    state = load_tensors(path, GeneratorError, "pose generator", "train one with `landscape train-pose-generator`")
    if not isinstance(state, dict) or state.get("kind") != "pose-vae":
        raise GeneratorError(f"{path} is not a pose generator checkpoint (written by `landscape train-pose-generator`)")
    if list(state["joint_names"]) != list(JOINT_NAMES_17):
        raise GeneratorError(f"{path}: joint order {state['joint_names']} differs from {list(JOINT_NAMES_17)}")
    model = PoseVAE(state["skeleton"], **state["config"])
    model.load_state_dict(state["state_dict"])
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def train_from_config(cfg: dict, out: Path, progress: bool = True) -> dict:
    """``landscape train-pose-generator``: train on the training subjects, measure held-out reconstruction,
    draw samples; writes pose-generator.pt, summary.json, samples.png and config.yaml into ``out``."""
    import json

    from landscape.config import dump_config
    from landscape.io import atomic_write_text
    from landscape.stats import mean_interval
    from tasks.pose.mocap import load_split, mocap_root
    from tasks.pose.plot import samples_figure

    d, g, t = cfg["data"], cfg["generator"], cfg["train"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    root = mocap_root(d["root"])
    train = load_split("train", root, every=int(d["every"]))
    test = load_split("test", root, every=int(d["heldout_every"]))
    model, history, seconds = train_pose_vae(
        train.poses, train.skeletons, int(g["latent_dim"]), int(g["hidden"]), int(g["depth"]), int(t["iterations"]),
        int(t["batch_size"]), float(t["lr"]), float(t["beta"]), float(t["sigma_mm"]), int(t["warmup"]),
        int(cfg["seed"]), progress)
    rec_test = reconstruction_mpjpe(model, test.poses)
    rec_train = reconstruction_mpjpe(model, train.poses[:: max(1, len(train.poses) // 2000)])
    with torch.no_grad():
        samples = model.decode(torch.randn(18, model.latent_dim, generator=torch.Generator().manual_seed(int(cfg["seed"]))))
        mu = model.encode(test.poses)[0]
    summary = {
        "train_seconds": seconds, "iterations": int(t["iterations"]), "history": history,
        "n_train_poses": len(train), "train_subjects": sorted(train.skeletons), "n_test_poses": len(test),
        "test_subjects": sorted(test.skeletons), "data": str(root.resolve()),
        "test_reconstruction_mpjpe_mm": dict(zip(("mean", "ci_low", "ci_high"), mean_interval(rec_test.tolist()))),
        "train_reconstruction_mpjpe_mm": dict(zip(("mean", "ci_low", "ci_high"), mean_interval(rec_train.tolist()))),
        "test_latent_mean_sq_norm_per_dim": float((mu ** 2).sum(1).mean() / model.latent_dim),
        "reference_bone_lengths_mm": {k: round(v, 1) for k, v in model.bone_lengths().items()},
    }
    save_pose_generator(out / "pose-generator.pt", model, {k: v for k, v in summary.items() if k != "history"})
    samples_figure(samples, out / "samples.png",
                   f"pose VAE: 18 samples x ~ N(0, I) (d={model.latent_dim}), reference skeleton")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
