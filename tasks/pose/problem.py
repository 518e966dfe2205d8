"""3D human pose from 2D keypoints by inverting the pose generator: the third task of Liu et al. (2023).

X is the VAE's latent space; the forward model is the decoder (a 3D pose, root-centred, world frame)
followed by the pinhole camera of the target (``pose_camera``: known intrinsics and rotation, the
person's position solved in closed form). A target is a dict of tensors:

  keypoints (N, 17, 2) px, visibility (N, 17) weights in [0, 1] (0: missing joint), rotation (N, 3, 3)
  world -> camera, focal (N, 1), principal (N, 2); and, for evaluation only, pose3d (N, 17, 3) mm.

Objective (a MAP energy: robust keypoint likelihood and the VAE's N(0, I) prior, divided by the number
of visible joints so step sizes do not depend on it):

  E(x) = [ sum_j w_j rho(|proj_j(D(x)) - k_j|) + prior_weight |x|^2 / 2 ] / sum_j w_j,
  rho(e) = sqrt(1 + e^2 / sigma^2) - 1

rho is the pseudo-Huber penalty: e^2 / (2 sigma^2) (Gaussian noise of ``sigma_px``) near the solution,
linear in e far from it. Detectors' errors are heavy-tailed, and the bounded per-joint gradient is what
lets plain gradient steps (the rule the landscape trainer unrolls) work: with the squared error, initial
gradients spanned three orders of magnitude and SGD diverged at any step size that made progress. The
prior resolves single-view depth ambiguity towards likely poses and keeps descent where the decoder
was trained; ``prior_weight`` = 1 is the exact MAP, 0 pure reprojection (measured worse; see the card).
Training targets: training-subject poses under random cameras with random missing joints; held out:
the test subjects (09, 13, 55), fixed by seed.
"""
from __future__ import annotations

import torch

from landscape.problem import InversionProblem, ProblemError, Target
from tasks.pose.camera import place_and_project, project, sample_cameras, to_camera
from tasks.pose.metrics import mpjpe, pa_mpjpe

TARGET_KEYS = ("keypoints", "visibility", "rotation", "focal", "principal")


def make_targets(poses: torch.Tensor, cameras: dict, visibility: torch.Tensor, noise_px: float = 0.0,
                 generator: torch.Generator | None = None) -> dict:
    """Targets for root-centred world poses seen by ``cameras`` (with their true translation)."""
    pts = to_camera(poses, cameras["rotation"]) + cameras["translation"].unsqueeze(-2)
    kp = project(pts, cameras["focal"], cameras["principal"])
    if noise_px:
        kp = kp + noise_px * torch.randn(kp.shape, generator=generator).to(kp.device)
    return {"keypoints": kp, "visibility": visibility.float(), "rotation": cameras["rotation"],
            "focal": cameras["focal"], "principal": cameras["principal"], "pose3d": poses}


def random_visibility(n: int, drop_prob: float, generator: torch.Generator | None = None, joints: int = 17,
                      n_missing: int | None = None) -> torch.Tensor:
    """(n, 17) 0/1: each joint missing with ``drop_prob``, or exactly ``n_missing`` joints missing per pose."""
    if n_missing is not None:
        order = torch.rand(n, joints, generator=generator).argsort(-1)
        vis = torch.ones(n, joints)
        vis.scatter_(1, order[:, :n_missing], 0.0)
        return vis
    return (torch.rand(n, joints, generator=generator) >= drop_prob).float()


class PoseInversion(InversionProblem):
    """Invert a pose generator (latent (N, d) -> joints (N, 17, 3) mm) through a pinhole camera."""

    def __init__(self, generator: torch.nn.Module, train_poses: torch.Tensor, heldout_poses: torch.Tensor,
                 camera: dict | None = None, drop_prob: float = 0.1, sigma_px: float = 5.0,
                 prior_weight: float = 1.0, noise_px: float = 0.0, seed: int = 0):
        self.G = generator.eval()
        for p in self.G.parameters():
            p.requires_grad_(False)
        self.latent_shape = (int(generator.latent_dim),)
        for name, poses in (("training", train_poses), ("held-out", heldout_poses)):
            if poses.dim() != 3 or tuple(poses.shape[1:]) != (17, 3):
                raise ProblemError(f"{name} poses must be (N, 17, 3), got {tuple(poses.shape)}")
        if not sigma_px > 0:
            raise ProblemError(f"sigma_px must be > 0, got {sigma_px}")
        if not 0 <= drop_prob < 1:
            raise ProblemError(f"drop_prob must lie in [0, 1), got {drop_prob}")
        self.train_poses, self.heldout_poses = train_poses.float(), heldout_poses.float()
        self.camera = dict(camera or {})
        self.drop_prob, self.sigma_px, self.prior_weight = float(drop_prob), float(sigma_px), float(prior_weight)
        self.noise_px, self.seed = float(noise_px), int(seed)
        self._heldout = None

    # -- the forward model and the objective ------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_x(x)
        return self.G.decode(x)

    def reprojection(self, pose: torch.Tensor, target: Target):
        """(pixels (N, 17, 2), camera-frame joints (N, 17, 3)) of ``pose`` at its least-squares position."""
        if not isinstance(target, dict) or any(k not in target for k in TARGET_KEYS):
            raise ProblemError(f"a pose target is a dict with {list(TARGET_KEYS)}, got "
                               f"{sorted(target) if isinstance(target, dict) else type(target).__name__}")
        if target["keypoints"].shape != pose.shape[:-1] + (2,):
            raise ProblemError(f"target keypoints {tuple(target['keypoints'].shape)} do not match poses "
                               f"{tuple(pose.shape)}")
        return place_and_project(pose, target, target["keypoints"], target["visibility"])

    def loss(self, prediction: torch.Tensor, target: Target) -> torch.Tensor:
        px, _ = self.reprojection(prediction, target)
        w = target["visibility"]
        se = ((px - target["keypoints"]) ** 2).sum(-1)
        rho = torch.sqrt(1 + se / self.sigma_px ** 2) - 1
        return (w * rho).sum(-1) / w.sum(-1).clamp_min(1e-6)

    def objective(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        data = self.loss(self.forward(x), target)
        if not self.prior_weight:
            return data
        return data + self.prior_weight * 0.5 * (x ** 2).sum(-1) / target["visibility"].sum(-1).clamp_min(1e-6)

    def metrics(self, x: torch.Tensor, target: Target) -> dict:
        with torch.no_grad():
            pose = self.forward(x)
            px, _ = self.reprojection(pose, target)
            vis = (target["visibility"] > 0).float()
            err2d = ((px - target["keypoints"]).norm(dim=-1) * vis).sum(-1) / vis.sum(-1).clamp_min(1)
            out = {"mpjpe": mpjpe(pose, target["pose3d"]), "pa_mpjpe": pa_mpjpe(pose, target["pose3d"]),
                   "err2d": err2d}
            out["loss"] = self.objective(x, target)
        return out

    # -- targets ------------------------------------------------------------------------------------------
    def targets_for(self, poses: torch.Tensor, generator: torch.Generator | None = None, camera: dict | None = None,
                    drop_prob: float | None = None, n_missing: int | None = None,
                    noise_px: float | None = None) -> dict:
        """Targets for ``poses`` under this task's cameras (or ``camera`` overrides), masks and noise.

        Cameras and masks are drawn on the CPU (the same draws on every device), then moved to the poses'."""
        cams = sample_cameras(len(poses), generator, **{**self.camera, **(camera or {})})
        cams = {k: v.to(poses.device) if torch.is_tensor(v) else v for k, v in cams.items()}
        vis = random_visibility(len(poses), self.drop_prob if drop_prob is None else drop_prob, generator,
                                n_missing=n_missing).to(poses.device)
        noise = self.noise_px if noise_px is None else noise_px
        return make_targets(poses, cams, vis, noise, generator)

    def sample_targets(self, n: int, generator: torch.Generator | None = None) -> dict:
        idx = torch.randint(len(self.train_poses), (n,), generator=generator)
        return self.targets_for(self.train_poses[idx], generator)

    def heldout(self, n: int | None = None) -> dict:
        """Test-subject poses in a seeded order, each with its own seeded camera and missing joints."""
        if self._heldout is None:
            g = torch.Generator().manual_seed(self.seed + 7919)
            order = torch.randperm(len(self.heldout_poses), generator=g)
            self._heldout = self.targets_for(self.heldout_poses[order], g)
            self._heldout["index"] = order
        out = {k: v for k, v in self._heldout.items() if k != "index"}
        if n is not None and n > len(self.heldout_poses):
            raise ProblemError(f"asked for {n} held-out poses; the test split has {len(self.heldout_poses)} "
                               f"(lower data.heldout_every to get more)")
        return out if n is None else {k: v[:n] for k, v in out.items()}

    def heldout_index(self, n: int | None = None) -> torch.Tensor:
        """Row of ``heldout_poses`` behind each held-out target."""
        self.heldout()
        return self._heldout["index"] if n is None else self._heldout["index"][:n]


def build_pose_problem(cfg: dict, generator_path) -> PoseInversion:
    """The task from its config section (``TASK_DEFAULTS["pose-cmu"]``): generator, CMU split, cameras."""
    from tasks.pose.generator import load_pose_generator
    from tasks.pose.mocap import load_split, mocap_root

    d, p = cfg["data"], cfg["problem"]
    G = load_pose_generator(generator_path)
    train = load_split("train", d["root"], every=int(d["every"]))
    test = load_split("test", d["root"], every=int(d["heldout_every"]))
    camera = {k: (tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v))
              for k, v in cfg["camera"].items()}
    problem = PoseInversion(G, train.poses, test.poses, camera, float(p["drop_prob"]), float(p["sigma_px"]),
                            float(p["prior_weight"]), float(p["noise_px"]), int(cfg["seed"]))
    problem.test_set, problem.data_root = test, mocap_root(d["root"])   # for the analyses (clips, subjects)
    return problem
