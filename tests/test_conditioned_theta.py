"""theta conditioned on the observation, theta(z, problem.condition(target)): beyond the paper."""
import pytest
import torch
from test_landscape_core import COORD, IllConditioned, TinyGenerator

from landscape import Space, ThetaTrainer, TrainConfig, load_theta
from landscape.theta import Theta, ThetaError
from tasks.gan.problem import GanInversion


def tiny_gan():
    G = TinyGenerator().eval()
    with torch.no_grad():
        imgs = G(torch.randn(160, 8, generator=torch.Generator().manual_seed(1)) * 1.5)
    return GanInversion(G, imgs[:128], imgs[128:])


CFG = dict(COORD, batch_size=64, collect_batch=32, collect_steps=20, buffer_size=4096, theta_lr=3e-3, eval_n=32,
           eval_budget=1, iterations=300)


def test_a_conditioned_theta_refuses_a_problem_without_a_condition():
    problem = IllConditioned()
    assert not problem.has_condition
    with pytest.raises(ThetaError, match="condition"):
        ThetaTrainer(problem, TrainConfig(condition=True, **COORD))


def test_an_untrained_conditioned_theta_is_the_identity_and_needs_its_target():
    problem = tiny_gan()
    assert problem.has_condition
    theta = Theta((8,), 8, width=16, depth=1, cond_dim=3 * 8 * 8)
    z, target = torch.randn(5, 8), problem.heldout(5)
    space = Space(problem, theta)
    assert torch.equal(space.to_x(z, target), z)
    with pytest.raises(ThetaError, match="target"):
        space.to_x(z)
    with pytest.raises(ThetaError, match="conditioned"):
        theta(z)
    with pytest.raises(ThetaError, match="not conditioned"):
        Theta((8,), 8, width=16, depth=1)(z, torch.zeros(5, 3))


def test_conditioning_lowers_the_loss_after_one_step_and_round_trips(tmp_path):
    torch.manual_seed(0)
    plain = ThetaTrainer(tiny_gan(), TrainConfig(**CFG))
    plain.train(progress=False)
    cond = ThetaTrainer(tiny_gan(), TrainConfig(condition=True, **CFG))
    cond.train(progress=False)
    assert cond.theta.cond_dim == 3 * 8 * 8
    # the same training, the same descent: the theta that sees the image gets further in one step
    assert cond.heldout_loss() < 0.8 * plain.heldout_loss(), (cond.heldout_loss(), plain.heldout_loss())
    cond.save(tmp_path / "theta.pt", with_buffer=False)
    theta, _ = load_theta(tmp_path / "theta.pt")
    problem = tiny_gan()
    target = problem.heldout(4)
    z = torch.randn(4, 8)
    assert torch.allclose(Space(problem, theta).to_x(z, target), cond.space.to_x(z, target))


def test_exact_gradients_reach_the_input_through_the_condition():
    from defense.purifiers.base import Purifier

    problem = tiny_gan()
    theta = Theta((8,), 8, width=16, depth=1, cond_dim=3 * 8 * 8)
    with torch.no_grad():
        theta.head.weight.normal_(0, 0.1)   # a trained theta's head is not zero
    purifier = Purifier(GanInversion(problem.G), budget=0, theta=theta, steps=("adam", 0.1)).exact()
    x = problem.heldout(3).clone().requires_grad_(True)
    purifier(x).sum().backward()
    # K = 0: the output is G(theta(z0, c(x))), so x reaches it only through the condition
    assert x.grad.abs().sum() > 0


def test_a_shift_only_theta_keeps_the_landscape_of_x_and_round_trips(tmp_path):
    with pytest.raises(ThetaError, match="condition"):
        TrainConfig(shift_only=True, **COORD).validate()
    with pytest.raises(ThetaError, match="cond_dim"):
        Theta((8,), 8, width=16, depth=1, shift_only=True)
    torch.manual_seed(0)
    trainer = ThetaTrainer(tiny_gan(), TrainConfig(condition=True, shift_only=True, skip="identity", **dict(CFG, iterations=60)))
    before = trainer.heldout_loss()
    trainer.train(progress=False)
    theta = trainer.theta
    assert theta.shift_only and theta.embed is None
    assert trainer.heldout_loss() < before          # the learned centre helps ...
    problem = tiny_gan()
    c = problem.condition(problem.heldout(4))
    z, d = torch.randn(4, 8), torch.randn(4, 8)
    shift = theta(z, c) - z
    assert shift.abs().max() > 1e-3                 # ... by moving the start per image
    # ... and nothing else: a move of d in Z is a move of d in X, wherever z is (the residual never sees z)
    assert torch.allclose(theta(z + d, c) - theta(z, c), d, atol=1e-5)
    trainer.save(tmp_path / "theta.pt", with_buffer=False)
    loaded, _ = load_theta(tmp_path / "theta.pt")
    assert loaded.shift_only and torch.allclose(loaded(z, c), theta(z, c))


def test_a_bounded_residual_moves_each_coordinate_at_most_b_and_round_trips(tmp_path):
    with pytest.raises(ThetaError, match="residual_bound"):
        Theta((8,), 8, width=16, depth=1, residual_bound=-1.0)
    with pytest.raises(ThetaError, match="residual_bound"):
        TrainConfig(condition=True, shift_only=True, residual_bound="big", **COORD).validate()
    for infinite in (float("inf"), float("nan")):   # b tanh(r / b) at b = inf is inf * 0: NaN
        with pytest.raises(ThetaError, match="finite"):
            Theta((8,), 8, width=16, depth=1, residual_bound=infinite)
        with pytest.raises(ThetaError, match="finite"):
            TrainConfig(condition=True, shift_only=True, residual_bound=infinite, **COORD).validate()
    torch.manual_seed(0)
    trainer = ThetaTrainer(tiny_gan(), TrainConfig(condition=True, shift_only=True, skip="identity", residual_bound=0.05,
                                                   **dict(CFG, iterations=60)))
    z = torch.randn(4, 8)
    problem = tiny_gan()
    c = problem.condition(problem.heldout(4))
    assert torch.equal(trainer.theta(z, c), z)          # untrained: still the identity
    with torch.no_grad():                                 # a residual far above the bound comes out at most b
        trainer.theta.head.bias.fill_(3.0)
    assert (trainer.theta(z, c) - z).abs().max() <= 0.05 + 1e-6
    assert (trainer.theta(z, c) - z).abs().min() > 0.049
    with torch.no_grad():
        trainer.theta.head.bias.zero_()
    trainer.train(progress=False)
    shift = trainer.theta(z, c) - z
    assert 0 < shift.abs().max() <= 0.05 + 1e-6
    trainer.save(tmp_path / "theta.pt", with_buffer=False)
    loaded, _ = load_theta(tmp_path / "theta.pt")
    assert loaded.residual_bound == 0.05 and torch.allclose(loaded(z, c), trainer.theta(z, c))
