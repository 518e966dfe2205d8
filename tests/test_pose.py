"""Pose inversion (task pose-cmu): camera, metrics, generator, inversion, keypoint files, CLI, on tiny models."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from landscape.descent import descend
from landscape.problem import ProblemError
from landscape_cli.main import main
from tasks.pose.camera import (
    look_at,
    place,
    place_and_project,
    project,
    sample_cameras,
    solve_translation,
    to_camera,
    weak_perspective_depth,
)
from tasks.pose.generator import (
    GeneratorError,
    PoseVAE,
    load_pose_generator,
    reference_skeleton_state,
    save_pose_generator,
    skeleton_from_state,
)
from tasks.pose.keypoints import COCO17, KeypointError, read_keypoints, write_keypoints
from tasks.pose.metrics import mpjpe, pa_mpjpe, procrustes_align
from tasks.pose.mocap import JOINT_NAMES_17, JOINT_PARENTS_17
from tasks.pose.problem import PoseInversion, make_targets, random_visibility

MOCAP = "data/mocap-cmu/index.csv"


def bones17(pose: torch.Tensor) -> torch.Tensor:
    return torch.stack([(pose[..., j, :] - pose[..., p, :]).norm(dim=-1)
                        for j, p in enumerate(JOINT_PARENTS_17) if p >= 0], -1)


def tiny_skeleton_state() -> dict:
    """A CMU-like 18-bone chain: what ``reference_skeleton_state`` returns, written by hand (no data needed)."""
    names = ["lhipjoint", "lfemur", "ltibia", "rhipjoint", "rfemur", "rtibia", "lowerback", "upperback", "thorax",
             "lowerneck", "upperneck", "head", "lclavicle", "lhumerus", "lradius", "rclavicle", "rhumerus", "rradius"]
    parents = [-1, 0, 1, -1, 3, 4, -1, 6, 7, 8, 9, 10, 8, 12, 13, 8, 15, 16]
    offsets = [[90, -100, 40], [0, -400, 0], [0, -410, 0], [-90, -100, 40], [0, -400, 0], [0, -410, 0],
               [0, 120, 0], [0, 115, 0], [0, 115, 0], [0, 90, 0], [0, 95, 0], [0, 100, 0], [170, 5, 0],
               [290, 0, 0], [190, 0, 0], [-170, 5, 0], [-290, 0, 0], [-190, 0, 0]]
    return {"names": names, "parents": parents, "offsets": torch.tensor(offsets, dtype=torch.float64),
            "free": [n not in ("lhipjoint", "rhipjoint") for n in names]}


@pytest.fixture(scope="module")
def vae():
    """An untrained but non-trivial decoder (random last layer), latent dim 4."""
    torch.manual_seed(0)
    model = PoseVAE(tiny_skeleton_state(), latent_dim=4, hidden=32, depth=2)
    with torch.no_grad():
        model.decoder[-1].weight.normal_(0, 0.3)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def cams(n, seed=0, **kw):
    return sample_cameras(n, torch.Generator().manual_seed(seed), **kw)


# ---- camera -------------------------------------------------------------------------------------------------
def test_look_at_is_a_rotation_facing_the_person():
    R = look_at(torch.tensor([0.0, 90.0, -135.0]), torch.tensor([0.0, 30.0, -10.0]))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(3), atol=1e-6)
    # worked by hand: on +Z looking at -Z, world +X is image right and world up is image up (v down)
    assert torch.allclose(R[0], torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]]), atol=1e-6)
    # azimuth 90: on +X looking at -X; elevation 30: looking down 30 degrees
    s, c = 0.5, 3 ** 0.5 / 2
    assert torch.allclose(R[1, 2], torch.tensor([-c, -s, 0.0]), atol=1e-6)


def test_projection_and_translation_solve_are_exact():
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(6, 17, 3, generator=g) * 300
    pose = pose - pose[:, :1]
    c = cams(6)
    target = make_targets(pose, c, torch.ones(6, 17))
    q = to_camera(pose, c["rotation"])
    # a hand check of the pinhole: the root sits at the true translation
    root_px = c["focal"] * c["translation"][:, :2] / c["translation"][:, 2:] + c["principal"]
    assert torch.allclose(target["keypoints"][:, 0], root_px, atol=1e-3)
    t = solve_translation(q.double(), target["keypoints"].double(), torch.ones(6, 17, dtype=torch.float64),
                          c["focal"].double(), c["principal"].double())
    assert torch.allclose(t, c["translation"].double(), rtol=1e-4, atol=0.5)     # mm at ~5 m
    px, pts = place_and_project(pose, target, target["keypoints"], target["visibility"])
    assert (px - target["keypoints"]).norm(dim=-1).max() < 0.05
    # a wrong pose cannot be placed to fit
    px2, _ = place_and_project(pose.flip(0), target, target["keypoints"], target["visibility"])
    assert (px2 - target["keypoints"]).norm(dim=-1).mean() > 5
    # a mirrored pose (x anti-correlated with the keypoints): least squares puts it near or behind the
    # camera; the placement used by the loss keeps it at least half the weak-perspective depth away
    qm = to_camera(pose, c["rotation"]) * torch.tensor([-1.0, 1.0, 1.0])
    ls = solve_translation(qm, target["keypoints"], target["visibility"], c["focal"], c["principal"])
    placed = place(qm, target["keypoints"], target["visibility"], c["focal"], c["principal"])
    wp = weak_perspective_depth(qm, target["keypoints"], target["visibility"], c["focal"])
    assert (ls[:, 2] < 0).any() and (placed[:, 2] >= 0.5 * wp - 1).all() and (placed[:, 2] > 1500).all()
    assert torch.allclose(wp, c["translation"][:, 2], rtol=0.15)          # weak perspective ~ the true depth
    # depths clamp instead of dividing by ~0
    assert torch.isfinite(project(torch.tensor([[[1.0, 1.0, 0.0]]]), torch.tensor([[1000.0]]),
                                  torch.tensor([[500.0, 500.0]]))).all()


def test_projection_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(1)
    pose = (torch.randn(2, 17, 3, generator=g, dtype=torch.float64) * 300)
    c = {k: v.double() for k, v in cams(2, 1).items()}
    vis = random_visibility(2, 0.2, g).double()
    kp = project(to_camera(pose, c["rotation"]) + c["translation"][:, None], c["focal"], c["principal"]) + 3.0
    kp = kp.detach()
    pose = (pose + 20 * torch.randn(pose.shape, generator=g, dtype=torch.float64)).requires_grad_()

    def f(p):
        px, _ = place_and_project(p, c, kp, vis)
        return ((px - kp) ** 2).sum(-1)

    assert torch.autograd.gradcheck(f, (pose,), eps=1e-4, atol=1e-4, rtol=1e-3)
    # and through the generator, the robust loss and the prior (the objective descent sees)
    vae64 = PoseVAE(tiny_skeleton_state(), latent_dim=3, hidden=8).double()
    with torch.no_grad():
        vae64.decoder[-1].weight.normal_(0, 0.3, generator=g)
    problem = PoseInversion(vae64, torch.zeros(1, 17, 3), torch.zeros(1, 17, 3))
    target = {"keypoints": kp, "visibility": vis, "rotation": c["rotation"], "focal": c["focal"],
              "principal": c["principal"]}
    x = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: problem.objective(v, target), (x,), eps=1e-5, atol=1e-5, rtol=1e-3)


# ---- metrics ------------------------------------------------------------------------------------------------
def test_mpjpe_and_procrustes():
    g = torch.Generator().manual_seed(2)
    truth = torch.randn(4, 17, 3, generator=g) * 200
    R = look_at(torch.tensor([40.0] * 4), torch.tensor([20.0] * 4))
    moved = 1.3 * truth @ R.transpose(1, 2) + torch.tensor([10.0, -50.0, 7.0])
    assert (mpjpe(moved, truth) > 50).all()
    assert torch.allclose(pa_mpjpe(moved, truth), torch.zeros(4), atol=1e-3)
    assert torch.allclose(procrustes_align(moved, truth).float(), truth, atol=1e-2)
    shifted = truth.clone()
    shifted[:, 5] += torch.tensor([30.0, 40.0, 0.0])        # one joint 50 mm off, root untouched
    assert torch.allclose(mpjpe(shifted, truth), torch.full((4,), 50 / 17), atol=1e-4)
    mirrored = truth * torch.tensor([-1.0, 1.0, 1.0])        # a reflection is not a rotation
    assert (pa_mpjpe(mirrored, truth) > 1).all()


# ---- generator ----------------------------------------------------------------------------------------------
# Edges of the 17-joint tree that are one bone of the skeleton (pelvis-spine and thorax-neck are two).
RIGID_17 = [i for i, j in enumerate(j for j, p in enumerate(JOINT_PARENTS_17) if p >= 0)
            if JOINT_NAMES_17[j] not in ("spine", "neck")]


def test_generator_outputs_keep_bone_lengths(vae, tmp_path):
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(3)) * 3
    out = vae.decode(z)
    assert out.shape == (64, 17, 3)
    assert torch.allclose(out[:, 0], torch.zeros(64, 3))                        # root-centred
    assert out.std(0).mean() > 20                                              # poses do vary with the latent
    # every bone of the skeleton keeps its length, whatever the latent
    pts = vae.points(z)
    lengths = torch.tensor(list(vae.bone_lengths().values()))
    parents = [b.parent for b in vae.skeleton.bones]
    seg = torch.stack([(pts[:, 1 + i] - pts[:, 0 if p < 0 else 1 + p]).norm(dim=-1) for i, p in enumerate(parents)], 1)
    assert torch.allclose(seg, lengths.expand(64, -1), atol=1e-2)
    assert len(RIGID_17) == 14 and torch.allclose(bones17(out)[:, RIGID_17], bones17(vae.decode_rest())[RIGID_17]
                                                  .expand(64, -1), atol=1e-2)
    assert bones17(out)[:, [i for i in range(16) if i not in RIGID_17]].std(0).min() > 1   # the spine bends
    # checkpoints round-trip (weights_only) and bad files are refused clearly
    save_pose_generator(tmp_path / "g.pt", vae, {"note": "test"})
    again = load_pose_generator(tmp_path / "g.pt")
    assert torch.allclose(again.decode(z), out, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="train-pose-generator"):
        load_pose_generator(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(GeneratorError, match="not a pose generator"):
        load_pose_generator(tmp_path / "other.pt")


def test_reference_skeleton_from_real_skeletons(shared):
    from tasks.pose.mocap import read_asf

    root = shared("data/mocap-cmu")
    sks = {s: read_asf(root / s / f"{s}.asf") for s in ("02", "05")}
    state = reference_skeleton_state(sks)
    sk = skeleton_from_state(state)
    assert len(sk.bones) == 18 and state["free"].count(False) == 2
    femur = state["names"].index("lfemur")
    mean_len = np.mean([s.bones[s.index("lfemur")].length for s in sks.values()])
    assert abs(float(state["offsets"][femur].norm()) - mean_len) < 1.0


# ---- inversion ----------------------------------------------------------------------------------------------
def test_inversion_recovers_a_generator_pose_from_several_views(vae):
    g = torch.Generator().manual_seed(4)
    x_true = torch.randn(1, 4, generator=g)
    pose = vae.decode(x_true)
    views = 4
    c = sample_cameras(views, g, azimuth=(-180, 180))
    target = make_targets(pose.expand(views, 17, 3), c, torch.ones(views, 17))
    problem = PoseInversion(vae, pose, pose, prior_weight=0.0)
    m = 6                                   # a few starts per view; keep the one with the lowest objective
    big = {k: v.repeat_interleave(m, 0) for k, v in target.items()}
    res = descend(lambda x: problem.objective(x, big), problem.init(views * m, g), 300, 0.05, "adam")
    loss = problem.objective(res.var, big).view(views, m)
    best = res.var.view(views, m, 4)[torch.arange(views), loss.argmin(1)]
    metrics = problem.metrics(best, target)
    assert (metrics["err2d"] < 0.5).all(), metrics["err2d"]
    assert (metrics["mpjpe"] < 10).all(), metrics["mpjpe"]           # mm, from one view each
    start = problem.metrics(problem.init(views, torch.Generator().manual_seed(9)), target)["mpjpe"]
    assert (start > 50).all()


def test_problem_targets_and_errors(vae):
    poses = vae.decode(torch.randn(30, 4, generator=torch.Generator().manual_seed(5)))
    problem = PoseInversion(vae, poses[:20], poses[20:], drop_prob=0.25, seed=3)
    a, b = problem.heldout(), problem.heldout(4)
    assert torch.equal(a["keypoints"][:4], b["keypoints"]) and len(a["keypoints"]) == 10
    assert torch.equal(PoseInversion(vae, poses[:20], poses[20:], seed=3).heldout()["rotation"], a["rotation"])
    t1 = problem.sample_targets(200, torch.Generator().manual_seed(0))
    assert 0.65 < t1["visibility"].mean() < 0.85                      # drop_prob 0.25
    assert set(t1) == {"keypoints", "visibility", "rotation", "focal", "principal", "pose3d"}
    six = problem.targets_for(poses[:5], n_missing=6)
    assert (six["visibility"].sum(1) == 11).all()
    loss = problem.objective(torch.zeros(20, 4), problem.sample_targets(20))
    assert loss.shape == (20,) and torch.isfinite(loss).all()
    with pytest.raises(ProblemError, match="shape"):
        problem.forward(torch.zeros(2, 5))
    with pytest.raises(ProblemError, match="dict"):
        problem.objective(torch.zeros(2, 4), torch.zeros(2, 17, 2))
    with pytest.raises(ProblemError, match="held-out"):
        problem.heldout(11)
    with pytest.raises(ProblemError, match="17, 3"):
        PoseInversion(vae, torch.zeros(3, 16, 3), poses)


# ---- keypoint files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_keypoint_file_round_trip(tmp_path, suffix):
    g = torch.Generator().manual_seed(6)
    kp = torch.rand(3, 17, 2, generator=g).double() * 1000
    conf = torch.rand(3, 17, generator=g).double()
    order = list(reversed(JOINT_NAMES_17))
    path = write_keypoints(tmp_path / f"k{suffix}", kp.flip(1).numpy(), order, 1000.0, [480.0, 520.0], conf.flip(1))
    back = read_keypoints(path)
    assert torch.allclose(back.keypoints.double(), kp, atol=1e-3)              # reordered to JOINT_NAMES_17
    assert torch.allclose(back.weights.double(), conf, atol=1e-6)
    assert back.focal == 1000.0 and back.principal == (480.0, 520.0)
    assert torch.allclose(back.rotation, look_at(torch.tensor([0.0]), torch.tensor([0.0]))[0])


def test_keypoint_file_coco_mapping_and_single_frame(tmp_path):
    kp = np.arange(17 * 2, dtype=float).reshape(17, 2)
    path = write_keypoints(tmp_path / "c.json", kp, COCO17, [1000.0, 1000.0], [500, 500])
    back = read_keypoints(path)
    names = list(JOINT_NAMES_17)
    assert back.keypoints.shape == (1, 17, 2)
    lh, rh = COCO17.index("left_hip"), COCO17.index("right_hip")
    assert torch.allclose(back.keypoints[0, names.index("pelvis")], torch.tensor((kp[lh] + kp[rh]) / 2).float())
    assert torch.allclose(back.keypoints[0, names.index("l_wrist")], torch.tensor(kp[COCO17.index("left_wrist")]).float())
    assert back.weights[0, names.index("head_top")] == 0 and back.weights[0, names.index("neck")] == 0
    assert back.weights.sum() == 14


def _good(**change):
    data = {"keypoints": np.full((2, 17, 2), 500.0), "joint_names": list(JOINT_NAMES_17), "focal_length": 1000.0,
            "principal_point": [500.0, 500.0]}
    data.update(change)
    return data


@pytest.mark.parametrize("change,message", [
    ({"keypoints": np.full((2, 16, 2), 500.0)}, "wrong joint count: keypoints have 16 joints but the joint order names 17"),
    ({"keypoints": np.where(np.eye(17)[None, :, :2] > 0, np.nan, 500.0).repeat(2, 0)}, "NaN"),
    ({"focal_length": 0.0}, "focal_length must be one or two positive"),
    ({"focal_length": None}, "missing 'focal_length'"),
    ({"principal_point": [500.0]}, "principal_point must be two"),
    ({"joint_names": None}, "name the joint order"),
    ({"joint_names": ["pelvis"] * 17}, "unknown joint names|repeat"),
    ({"joint_names": ["hip_centre"] + list(JOINT_NAMES_17[1:])}, "unknown joint names"),
    ({"keypoints": np.full((2, 17, 3), 500.0)}, r"\(frames, joints, 2\)"),
    ({"confidence": np.full((2, 17), 2.0)}, r"confidence must lie in \[0, 1\]"),
    ({"confidence": np.zeros((2, 17))}, "at least 2"),
])
def test_bad_keypoint_files(tmp_path, change, message):
    data = {k: v for k, v in _good(**change).items() if v is not None}
    for suffix in (".json", ".npz"):
        path = tmp_path / f"bad{suffix}"
        if suffix == ".json":
            path.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in data.items()}))
        else:
            np.savez(path, **{k: np.asarray(v) for k, v in data.items()})
        with pytest.raises(KeypointError, match=message) as info:
            read_keypoints(path)
        assert str(path) in str(info.value)


def test_unreadable_keypoint_files(tmp_path):
    (tmp_path / "k.txt").write_text("1 2 3")
    (tmp_path / "t.json").write_text("{\"keypoints\": [[1, 2]")
    for name, message in (("k.txt", "unknown keypoint file type"), ("t.json", "not valid JSON"),
                          ("none.npz", "not found")):
        with pytest.raises(KeypointError, match=message) as info:
            read_keypoints(tmp_path / name)
        assert name in str(info.value)


def test_cli_keypoints_reconstructs_and_reports_bad_input(vae, tmp_path, capsys):
    save_pose_generator(tmp_path / "g.pt", vae)
    g = torch.Generator().manual_seed(7)
    z0, dz = torch.randn(2, 4, generator=g)
    pose = vae.decode(z0 + 0.15 * torch.arange(3.0)[:, None] * dz)           # a smooth little clip
    c = sample_cameras(1, g)
    c = {k: v.expand(3, *v.shape[1:]) for k, v in c.items()}
    target = make_targets(pose, c, torch.ones(3, 17))
    kp_file = write_keypoints(tmp_path / "clip.npz", target["keypoints"].numpy(), JOINT_NAMES_17,
                              float(c["focal"][0]), c["principal"][0].tolist(), camera_rotation=c["rotation"][0].numpy())
    out = tmp_path / "out"
    args = ["invert", "--task", "pose-cmu", "--keypoints", str(kp_file), "--out", str(out), "--quiet",
            f"generator.weights={tmp_path / 'g.pt'}", "keypoints.space=X", "keypoints.rule_x=adam",
            "keypoints.lr_x=0.05", "keypoints.steps=200", "keypoints.warm_steps=60", "keypoints.hypotheses=6",
            "problem.prior_weight=0"]
    assert main(args) == 0
    assert "final 2D error" in capsys.readouterr().out
    res = np.load(out / "clip_3d.npz")
    assert res["joints3d_camera"].shape == (3, 17, 3) and res["err2d_px"].shape == (3,)
    assert list(res["joint_names"]) == list(JOINT_NAMES_17)
    assert res["err2d_px"].max() < 0.5                                     # the generator can produce these poses
    assert (mpjpe(torch.tensor(res["joints3d_world"]).float(), pose) < 5).all()   # and they are recovered in 3D
    # root-centred world output keeps the reference bone lengths
    assert np.allclose(bones17(torch.tensor(res["joints3d_world"]))[:, RIGID_17],
                       bones17(vae.decode_rest()).double()[RIGID_17], atol=0.05)
    assert (res["joints3d_camera"][:, 0, 2] > 3000).all()                  # placed metres in front of the camera
    # bad input: the CLI names the file and the problem
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_good(focal_length=0.0) | {"keypoints": np.full((1, 17, 2), 1.0).tolist()}))
    assert main(["invert", "--task", "pose-cmu", "--keypoints", str(bad), "--quiet",
                 f"generator.weights={tmp_path / 'g.pt'}"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "focal_length" in err
    assert main(["invert", "--task", "gan-cifar10", "--keypoints", str(kp_file), "--quiet"]) == 2
    assert "pose-cmu" in capsys.readouterr().err


# ---- end to end on the real data ------------------------------------------------------------------------------
def test_train_generator_theta_and_invert_end_to_end(shared, tmp_path):
    root = shared("data/mocap-cmu")
    common = [f"data.root={root}", "--quiet", "threads=1"]
    assert main(["train-pose-generator", "--out", str(tmp_path / "gen"), "train.iterations=30", "train.batch_size=64",
                 "generator.hidden=32", "train.warmup=10", *common]) == 0
    summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert summary["test_subjects"] == ["09", "13", "55"] and "09" not in summary["train_subjects"]
    assert summary["test_reconstruction_mpjpe_mm"]["mean"] > 0 and (tmp_path / "gen" / "samples.png").is_file()
    gen = f"generator.weights={tmp_path / 'gen' / 'pose-generator.pt'}"
    assert main(["train-theta", "--task", "pose-cmu", "--out", str(tmp_path / "theta"), "theta.iterations=3",
                 "theta.batch_size=8", "theta.unroll=2", "theta.width=16", "theta.collect_steps=3",
                 "theta.checkpoint_every=2", gen, *common]) == 0
    out = tmp_path / "inv"
    assert main(["invert", "--task", "pose-cmu", "--out", str(out), gen,
                 f"theta.weights={tmp_path / 'theta' / 'theta.pt'}", "invert.budgets=[1,3]", "invert.n_images=12",
                 "invert.n_tune=6", "invert.search={sgd: [0.1], adam: [0.1]}",
                 "analyses.n_images=6", "analyses.hypotheses=2", "analyses.clip_frames=3", "analyses.clip_every=20",
                 "analyses.baseline_iterations=3", "analyses.baseline_width=16", "analyses.action_steps=4",
                 "analyses.figure_budgets=[1,3]", *common]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["space"]) == {"X", "Z"} and set(summary["budget"]) == {1, 3}
    assert {"mpjpe", "pa_mpjpe", "err2d", "loss"} <= set(summary["metric"])
    assert (summary["ci_low"] <= summary["mean"]).all()
    for name in ("mpjpe_vs_budget.png", "skeletons.png", "hypotheses.csv", "action.csv", "action_per_frame.csv",
                 "action_mpjpe.png", "action.gif", "baseline.csv"):
        assert (out / name).is_file(), name
    hyp = pd.read_csv(out / "hypotheses.csv")
    assert (hyp["mpjpe_best_of_m"] <= hyp["mpjpe_single"] + 1e-6).all()
    base = pd.read_csv(out / "baseline.csv")
    assert base["condition"].nunique() == 6 and "lifting baseline (1 pass)" in set(base["method"])
    # the data root is checked like the CIFAR-10 one
    code = main(["invert", "--task", "pose-cmu", "--out", str(tmp_path / "x"), gen, f"data.root={tmp_path}",
                 "--quiet"])
    assert code == 2
