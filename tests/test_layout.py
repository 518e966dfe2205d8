"""The layout's promises: every problem moves to a device whole, a purifier and the theta it uses
solve one objective, and a worker that cannot see any checkpoint still evaluates every defense."""
import shutil

import pytest
import torch
import torch.nn as nn
from ray import cloudpickle as pickle  # what Ray uses to ship the context

from cifar10.generator import Generator, save_generator
from cifar10.ssl_head import ContrastiveHead, SelfSupervised, save_head
from defense.purifiers import GeneratorPurifier, ReversePurifier
from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS
from evaluator.run import EvalContext, evaluate
from landscape import LandscapeError, Space, ThetaTrainer, TrainConfig
from landscape.config import load_config
from tasks.gan.problem import GanInversion
from tasks.reverse.problem import ReverseAttackProblem


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc((x - 0.5).flatten(1))


def reverse_problem(n=6, eps=8 / 255):
    head = ContrastiveHead(3 * 32 * 32, 16, 8)
    head.bank = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    imgs = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return ReverseAttackProblem(SelfSupervised(Net(), head), eps, imgs, imgs, (imgs + 0.01).clamp(0, 1))


def pose_problem():
    from test_pose import tiny_skeleton_state

    from tasks.pose.generator import PoseVAE
    from tasks.pose.problem import PoseInversion

    torch.manual_seed(0)
    vae = PoseVAE(tiny_skeleton_state(), latent_dim=4, hidden=8, depth=1).eval()
    poses = vae.decode(torch.randn(6, 4))
    return PoseInversion(vae, poses[:4], poses[4:])


def gan_problem():
    imgs = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return GanInversion(Generator(latent_dim=8, width=4).eval(), imgs, imgs)


@pytest.mark.parametrize("build", [gan_problem, reverse_problem, pose_problem], ids=["gan", "reverse", "pose"])
def test_problem_to_moves_every_tensor_and_the_objective_runs_there(build):
    problem = build()
    before = dict(problem.tensors())
    assert len(before) > 3 and all(t.device.type == "cpu" for t in before.values())
    problem.to("meta")
    after = dict(problem.tensors())
    assert set(after) == set(before)
    assert [n for n, t in after.items() if t.device.type != "meta"] == []
    assert problem.device == torch.device("meta")
    target = problem.sample_targets(2, torch.Generator().manual_seed(0))
    targets = target.values() if isinstance(target, dict) else [target]
    assert all(t.device.type == "meta" for t in targets)
    for space in (Space(problem), Space(problem, _theta_for(problem).to("meta"))):
        x = space.to_x(space.init(2))
        assert x.device.type == "meta" and problem.objective(x, target).device.type == "meta"


def _theta_for(problem):
    from landscape.theta import Theta

    return Theta(problem.latent_shape, width=8, depth=1)


def test_reverse_theta_is_trained_on_the_reverse_purifiers_own_objective():
    problem = reverse_problem()
    cfg = TrainConfig(iterations=2, batch_size=4, unroll=2, lr_z=0.2, rule="adam", width=8, depth=1, skip="identity",
                      buffer_size=16, collect_every=1, collect_steps=2, checkpoint_every=100)
    trainer = ThetaTrainer(problem, cfg)
    trainer.train(progress=False)
    x = problem.heldout(3)
    for theta in (None, trainer.theta):
        p = ReversePurifier(problem.ssl, budget=2, restarts=1, eps_rev=problem.eps, theta=theta)
        delta = (torch.rand_like(x) * 2 - 1) * problem.eps
        torch.manual_seed(5)
        a = trainer.problem.objective(delta, x)
        torch.manual_seed(5)
        b = p.problem.objective(delta, x)
        assert torch.equal(a, b)
        z = torch.randn(3, 3 * 32 * 32)
        if theta is not None:      # the same map from Z onto the eps-ball
            assert torch.equal(trainer.space.to_x(z), p.space.to_x(z))
            assert p.space.to_x(z).abs().max() <= problem.eps
        else:                      # the plain space keeps every step in the ball
            assert torch.equal(p.problem.project(delta * 3), (delta * 3).clamp(-problem.eps, problem.eps))


def test_generator_purifier_is_gan_inversion_with_the_image_as_target():
    problem = gan_problem()
    p = GeneratorPurifier(problem.G, budget=3, restarts=1, steps=("adam", 0.1))
    x, v = problem.heldout(2), torch.randn(2, 8)
    assert torch.equal(p.problem.objective(v, x), problem.objective(v, x))
    assert torch.equal(p.problem.solution(v, x), problem.G(v))


def test_a_worker_that_cannot_see_any_checkpoint_evaluates_every_defense_in_every_mode(tiny, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.manual_seed(0)
    G = Generator(latent_dim=8, width=4).eval()
    save_generator(ckpt / "g.pt", G)
    imgs = tiny.x[:8]
    ThetaTrainer(GanInversion(G, imgs, imgs), TrainConfig(iterations=1, width=8, depth=1)).save(ckpt / "theta.pt")
    head = ContrastiveHead(3 * 32 * 32, 16, 8)
    head.bank = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    save_head(ckpt / "head.pt", head)
    rp = ReverseAttackProblem(SelfSupervised(tiny.model, head), 8 / 255, imgs, imgs)
    ThetaTrainer(rp, TrainConfig(iterations=1, width=8, depth=1, skip="identity", rule="adam")).save(ckpt / "rtheta.pt")
    modes = ["nonadaptive", "bpda", "eot", "bpda+eot", "unrolled"]
    defenses = ["none", "purify-x", "purify-z", "reverse-x", "reverse-z"]
    cfg = load_config(EVAL_DEFAULTS, None, [
        f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}", "data.n_examples=4",
        "eval.batch_size=4", "eval.progress=false", "attacks=[none,fgsm]", f"defenses=[{','.join(defenses)}]",
        "defense.budgets=[1]", "defense.restarts=1", "defense.eot_draws=2", f"defense.modes=[{','.join(modes)}]",
        f"defense.generator.weights={ckpt / 'g.pt'}", f"defense.theta={ckpt / 'theta.pt'}",
        f"defense.ssl_head={ckpt / 'head.pt'}", f"defense.reverse_theta={ckpt / 'rtheta.pt'}",
        "defense.step_sizes={1: [adam, 0.1]}", "device=cpu", "ray.num_workers=0"], OPEN_SECTIONS)
    ctx = EvalContext.build(cfg)                  # the driver loads everything
    shipped = pickle.dumps(ctx)                   # what Ray's object store carries
    shutil.rmtree(ckpt)                           # the worker's machine has no checkpoint at all
    results, _ = evaluate(cfg, progress=False, ctx=pickle.loads(shipped))
    cells = set(zip(results["defense"], results["attack"]))
    for d in defenses[1:]:
        assert (d, "none") in cells
        for m in modes:
            assert (d, f"fgsm+{m}") in cells, (d, m)
    assert set(results[results.defense != "none"]["landscape"]) == {"x", "z"}
    assert results.attrs["skipped"] == []


def test_every_error_the_cli_reports_is_one_class():
    from attacks.base import AttackError
    from cifar10.classifiers import ModelError
    from cifar10.data import DataError
    from evaluator.grid import EvalError
    from landscape.config import ConfigError
    from landscape.io import CheckpointError, MissingCheckpointError
    from landscape.theta import ThetaError
    from ray_jobs.submit import SubmitError
    from tasks.pose.keypoints import KeypointError
    from tasks.pose.mocap import MocapError
    from tasks.registry import TaskError

    for cls in (AttackError, ModelError, DataError, EvalError, ConfigError, CheckpointError, MissingCheckpointError,
                ThetaError, SubmitError, KeypointError, MocapError, TaskError):
        assert issubclass(cls, LandscapeError), cls
    from landscape.theta import Theta

    with pytest.raises(LandscapeError, match="z_dim"):
        Theta((3,), z_dim=5, skip="identity")
    with pytest.raises(LandscapeError, match="unroll"):
        TrainConfig(unroll=0).validate()


def test_a_checkpoint_of_the_wrong_kind_is_named_not_a_keyerror(tmp_path):
    from landscape.trainer import load_theta

    save_generator(tmp_path / "g.pt", Generator(latent_dim=8, width=4))
    with pytest.raises(LandscapeError, match="is not a theta checkpoint"):
        load_theta(tmp_path / "g.pt")


def test_the_jobs_command_does_not_load_torch():
    """`landscape jobs` talks to a cluster; it must not pay for importing torch (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys\nfrom landscape_cli.main import main\n"
            "rc = main(['jobs', 'status', 'x', '--address', 'http://127.0.0.1:1'])\n"
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["2", "False"], (out.stdout, out.stderr[-500:])
    assert "cannot reach the Ray dashboard" in out.stderr
