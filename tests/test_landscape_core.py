"""The task-agnostic core on a small analytic problem where plain descent is slow."""
import copy

import pandas as pd
import pytest
import torch

from landscape import (
    CheckpointError,
    DescentError,
    InversionProblem,
    LandscapeError,
    ProblemError,
    ReplayBuffer,
    Space,
    ThetaTrainer,
    TrainConfig,
    descend,
    load_theta,
    tune_step_size,
)
from landscape.compare import compare_spaces, steps_to_reach


class IllConditioned(InversionProblem):
    """F(x) = s * x with curvatures spread over two decades: plain descent crawls along the flat axes."""

    def __init__(self, d=8, cond=100.0):
        self.latent_shape = (d,)
        self.scales = torch.logspace(0, 1, d, dtype=torch.float64).float() * (cond ** 0.5 / 10)
        self._held = self.sample_targets(128, torch.Generator().manual_seed(123))

    def forward(self, x):
        self.check_x(x)
        return x * self.scales

    def loss(self, prediction, target):
        return ((prediction - target) ** 2).sum(1)

    def sample_targets(self, n, generator=None):
        return torch.randn(n, self.latent_shape[0], generator=generator) * self.scales

    def heldout(self, n=None):
        return self._held if n is None else self._held[:n]


CFG = dict(iterations=150, batch_size=64, unroll=5, lr_z=0.005, width=64, depth=2, collect_every=10,
           collect_steps=10, buffer_size=512, checkpoint_every=1000)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    problem = IllConditioned()
    trainer = ThetaTrainer(problem, TrainConfig(**CFG))
    trainer.train(progress=False)
    return problem, trainer


def test_theta_beats_tuned_descent_in_x_at_small_k(trained):
    problem, trainer = trained
    y = problem.heldout()
    obj = lambda x: problem.objective(x, y)  # noqa: E731
    for k in (2, 5):
        x0 = problem.init(len(y), torch.Generator().manual_seed(1))
        lr, _ = tune_step_size(lambda lr: descend(obj, x0, k, lr).losses[-1], [1e-3, 3e-3, 1e-2, 3e-2, 0.1])
        loss_x = descend(obj, x0, k, lr).losses[-1].mean()
        learned = Space(problem, trainer.theta)
        z0 = learned.init(len(y), torch.Generator().manual_seed(1))
        loss_z = learned.descend(y, z0, k, trainer.cfg.lr_z).losses[-1].mean()
        assert loss_z < 0.7 * loss_x, (k, float(loss_x), float(loss_z))


def test_compare_spaces_reports_both_spaces(trained):
    problem, trainer = trained
    per, summary = compare_spaces(problem, trainer.theta, problem.heldout(32), problem.sample_targets(32),
                                  [1, 5, 20], [("sgd", 1e-3), ("sgd", 3e-3), ("adam", 0.1)], [("sgd", 0.005)])
    assert set(summary["space"]) == {"X", "Z"}
    assert len(per) == 2 * 3 * 32
    x5 = summary[(summary.space == "X") & (summary.budget == 5)]["mean"].item()
    z5 = summary[(summary.space == "Z") & (summary.budget == 5)]["mean"].item()
    assert z5 < x5
    k = steps_to_reach(summary, "loss", x5, "Z")
    assert k is not None and k <= 5


def test_unrolled_gradients_match_finite_differences():
    torch.manual_seed(0)
    A = torch.randn(4, 3, dtype=torch.float64)
    y = torch.randn(2, 4, dtype=torch.float64)
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    obj = lambda x: ((torch.tanh(x) @ A.T - y) ** 2).sum(1)  # noqa: E731
    z0 = torch.randn(2, 3, dtype=torch.float64)
    for rule in ("sgd", "adam"):
        def total(weight):
            return descend(obj, z0, 4, 0.05, rule, theta=lambda z: z @ weight, differentiable=True).losses.sum()
        (g,) = torch.autograd.grad(total(w), w)
        fd = torch.zeros_like(w)
        h = 1e-6
        for i in range(3):
            for j in range(3):
                e = torch.zeros_like(w)
                e[i, j] = h
                fd[i, j] = (total(w.detach() + e) - total(w.detach() - e)) / (2 * h)
        assert torch.allclose(g, fd, rtol=1e-5, atol=1e-7), rule


def test_descent_returns_losses_at_every_step_and_bad_budget():
    obj = lambda x: (x ** 2).sum(1)  # noqa: E731
    res = descend(obj, torch.ones(3, 2), 7, 0.1)
    assert res.losses.shape == (8, 3)
    assert torch.all(res.losses[1:] < res.losses[:-1])
    with pytest.raises(DescentError, match="K"):
        descend(obj, torch.ones(3, 2), -1, 0.1)
    with pytest.raises(DescentError, match="rule"):
        descend(obj, torch.ones(3, 2), 1, 0.1, rule="newton")
    with pytest.raises(DescentError, match="one loss per example"):
        descend(lambda x: (x ** 2).sum(), torch.ones(3, 2), 1, 0.1)


def test_shape_mismatch_is_a_clear_error():
    problem = IllConditioned(d=8)
    with pytest.raises(ProblemError, match=r"shape"):
        problem.forward(torch.zeros(2, 5))


def test_buffer_wraps_and_round_trips():
    buf = ReplayBuffer(5)
    buf.push(torch.arange(3.0).view(3, 1), {"y": torch.arange(3.0), "m": torch.ones(3)})
    buf.push(torch.arange(3.0, 7.0).view(4, 1), {"y": torch.arange(3.0, 7.0), "m": torch.ones(4)})
    assert len(buf) == 5
    assert sorted(buf.z.view(-1).tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]  # the oldest points were overwritten
    assert torch.equal(buf.z.view(-1), buf.target["y"])                   # points stay paired with their targets
    other = ReplayBuffer(1)
    other.load_state_dict(copy.deepcopy(buf.state_dict()))
    z, t = other.sample(10, torch.Generator().manual_seed(0))
    assert torch.equal(z.view(-1), t["y"])
    with pytest.raises(ValueError):
        ReplayBuffer(0)


def test_checkpoint_resume_reproduces_uninterrupted_training(tmp_path):
    cfg = dict(CFG, iterations=12, collect_every=3)
    straight = ThetaTrainer(IllConditioned(), TrainConfig(**cfg))
    straight.train(progress=False)

    first = ThetaTrainer(IllConditioned(), TrainConfig(**dict(cfg, iterations=6)))
    first.train(tmp_path / "state.pt", progress=False)
    resumed = ThetaTrainer(IllConditioned(), TrainConfig(**cfg))
    resumed.resume(tmp_path / "state.pt")
    assert resumed.iteration == 6 and len(resumed.buffer) == len(first.buffer)
    resumed.train(progress=False)
    for a, b in zip(straight.theta.parameters(), resumed.theta.parameters()):
        assert torch.allclose(a, b, atol=1e-6)

    resumed.save(tmp_path / "theta.pt", with_buffer=False)
    theta, saved_cfg = load_theta(tmp_path / "theta.pt")
    z = torch.randn(4, theta.z_dim)
    assert torch.allclose(theta(z), resumed.theta(z))
    assert saved_cfg["unroll"] == cfg["unroll"]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_theta(tmp_path / "missing.pt")
    t = ThetaTrainer(IllConditioned(), TrainConfig(**dict(CFG, iterations=1)))
    t.train(tmp_path / "s.pt", progress=False)
    other = ThetaTrainer(IllConditioned(), TrainConfig(**dict(CFG, unroll=3)))
    with pytest.raises(CheckpointError, match="unroll"):
        other.resume(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="unroll"):
        TrainConfig(**dict(CFG, unroll=0)).validate()


def test_identity_skip_starts_as_x_holds_no_square_matrix_and_round_trips(tmp_path):
    from landscape.theta import Theta

    big = Theta((3, 32, 32), None, width=8, depth=1, skip="identity")
    linear = Theta((3, 32, 32), None, width=8, depth=1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(linear) - count(big) == 3072 * 3072 + 3072
    z = torch.randn(2, 3072)
    assert torch.equal(big(z), z.view(2, 3, 32, 32))  # untrained: exactly descent in X
    with pytest.raises(ValueError, match="z_dim"):
        Theta((3, 32, 32), 64, skip="identity")
    with pytest.raises(ValueError, match="unknown theta skip"):
        Theta((8,), skip="conv")
    t = ThetaTrainer(IllConditioned(), TrainConfig(**dict(CFG, iterations=3, skip="identity")))
    t.train(progress=False)
    t.save(tmp_path / "theta.pt", with_buffer=False)
    theta, cfg = load_theta(tmp_path / "theta.pt")
    assert isinstance(theta.skip, torch.nn.Identity) and cfg["skip"] == "identity"
    z = torch.randn(4, 8)
    assert torch.allclose(theta(z), t.theta(z))


# ---- the coordinate method (Liu et al.'s coordinate descent with experience replay) -----------------------
COORD = dict(method="coordinate", batch_size=64, lr_z=0.1, rule="adam", width=64, depth=2, collect_every=4,
             collect_steps=10, collect_batch=64, buffer_size=2048, theta_lr=1e-3, eval_budget=5, eval_n=128)


def test_coordinate_training_lowers_the_heldout_loss_at_fixed_k():
    trainer = ThetaTrainer(IllConditioned(), TrainConfig(iterations=300, eval_every=100, **COORD))
    before = trainer.heldout_loss()
    trainer.train(progress=False)
    curve = [h["heldout_loss_k5"] for h in trainer.history if "heldout_loss_k5" in h]
    assert len(curve) == 3 and curve[-1] == trainer.heldout_loss()
    assert curve[-1] < 0.7 * before, (before, curve)


class TinyGenerator(torch.nn.Module):
    """latent (N, 8) -> images (N, 3, 8, 8) in [0, 1], varied enough for inversion to matter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.latent_dim = 8
        self.a, self.b = torch.nn.Linear(8, 32), torch.nn.Linear(32, 3 * 8 * 8)

    def forward(self, z):
        return torch.sigmoid(self.b(torch.tanh(self.a(z)))).view(-1, 3, 8, 8)


def test_coordinate_training_lowers_the_heldout_loss_of_a_tiny_generator():
    from tasks.gan.problem import GanInversion

    G = TinyGenerator().eval()
    with torch.no_grad():
        imgs = G(torch.randn(160, 8, generator=torch.Generator().manual_seed(1)) * 1.5)
    cfg = dict(COORD, batch_size=64, collect_batch=32, collect_steps=20, buffer_size=4096, theta_lr=3e-3, eval_n=32)
    trainer = ThetaTrainer(GanInversion(G, imgs[:128], imgs[128:]), TrainConfig(iterations=600, **cfg))
    before = trainer.heldout_loss()
    trainer.train(progress=False)
    assert trainer.heldout_loss() < 0.9 * before, (before, trainer.heldout_loss())


@pytest.mark.parametrize("method", ["unrolled", "coordinate"])
def test_resume_reproduces_uninterrupted_training_exactly(method, tmp_path):
    cfg = dict(COORD, method=method, unroll=3, eval_every=2, batch_size=16, collect_batch=16, checkpoint_every=3)
    whole = ThetaTrainer(IllConditioned(), TrainConfig(iterations=6, **cfg))
    whole.train(progress=False)
    first = ThetaTrainer(IllConditioned(), TrainConfig(iterations=3, **cfg))
    first.train(tmp_path / "state.pt", progress=False)
    resumed = ThetaTrainer(IllConditioned(), TrainConfig(iterations=6, **cfg))
    resumed.resume(tmp_path / "state.pt")
    assert resumed.iteration == 3
    resumed.train(progress=False)
    for a, b in zip(whole.theta.state_dict().values(), resumed.theta.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]


def test_an_unknown_method_is_refused():
    with pytest.raises(LandscapeError, match="method"):
        TrainConfig(method="magic").validate()


class Noisy(IllConditioned):
    """An objective with randomness inside (as augmentations are in the reverse attack's loss)."""

    def objective(self, x, target):
        return super().objective(x, target) * (1 + 0.1 * torch.randn(len(x)))


def test_the_heldout_evaluation_is_repeatable_and_does_not_change_training():
    cfg = dict(COORD, iterations=6, batch_size=16, collect_batch=16)
    quiet = ThetaTrainer(Noisy(), TrainConfig(eval_every=0, **cfg))
    quiet.train(progress=False)
    watched = ThetaTrainer(Noisy(), TrainConfig(eval_every=2, **cfg))
    watched.train(progress=False)
    for a, b in zip(quiet.theta.state_dict().values(), watched.theta.state_dict().values()):
        assert torch.equal(a, b)
    assert watched.heldout_loss() == watched.heldout_loss()


def test_x_figures_of_a_noisy_objective_do_not_depend_on_what_ran_before():
    problem = Noisy()
    cands = [("sgd", 1e-3), ("adam", 0.1)]
    tune, held = problem.sample_targets(16, torch.Generator().manual_seed(1)), problem.heldout(16)
    a, _ = compare_spaces(problem, None, held, tune, [1, 5], cands, cands)
    torch.randn(1000)   # e.g. another theta's initialization drew from the global stream
    b, _ = compare_spaces(problem, None, held, tune, [1, 5], cands, cands)
    pd.testing.assert_frame_equal(a.drop(columns="seconds_per_step"), b.drop(columns="seconds_per_step"))


def test_resume_accepts_task_settings_the_checkpoint_predates_and_refuses_changed_ones(tmp_path):
    cfg = dict(CFG, iterations=2, checkpoint_every=1)
    old = ThetaTrainer(IllConditioned(), TrainConfig(extra={"task": "t"}, **cfg))
    old.train(tmp_path / "state.pt", progress=False)
    ThetaTrainer(IllConditioned(), TrainConfig(extra={"task": "t", "eps_rev": 0.1}, **cfg)).resume(tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="extra"):
        ThetaTrainer(IllConditioned(), TrainConfig(extra={"task": "other"}, **cfg)).resume(tmp_path / "state.pt")


def test_init_fine_tunes_a_trained_theta_with_another_method(tmp_path):
    coord = ThetaTrainer(IllConditioned(), TrainConfig(iterations=100, **COORD))
    coord.train(tmp_path / "coordinate.pt", progress=False)
    before = coord.heldout_loss()
    cfg = dict(COORD, method="unrolled", unroll=5, theta_lr=1e-4, init=str(tmp_path / "coordinate.pt"))
    tuned = ThetaTrainer(IllConditioned(), TrainConfig(iterations=1, **cfg))
    for a, b in zip(coord.theta.state_dict().values(), tuned.theta.state_dict().values()):
        assert torch.equal(a, b)                     # starts where the trained theta ended, not at the identity
    tuned = ThetaTrainer(IllConditioned(), TrainConfig(iterations=150, **cfg))
    tuned.train(progress=False)
    assert tuned.heldout_loss() < before, (before, tuned.heldout_loss())   # the K-step loss it now trains for
    with pytest.raises(LandscapeError, match="architecture differs"):
        ThetaTrainer(IllConditioned(), TrainConfig(**dict(cfg, width=32)))
