"""The reverse-attack purifier: its bound, its loss, its gradients, and the head's training."""
import torch
import torch.nn as nn
from _util import assert_matches_finite_differences

from attacks.adaptive import BPDA, Defended
from cifar10.ssl_head import (
    ContrastiveHead,
    SelfSupervised,
    augment,
    build_bank,
    contrastive_loss,
    load_head,
    save_head,
    train_head,
)
from defense.purifiers import ReversePurifier
from landscape.theta import Theta


class TinyNet(nn.Module):
    """A small conv classifier with a ``features`` method (the head reads its penultimate features)."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, 2, 1).to(dtype)
        self.linear = nn.Linear(8, 3).to(dtype)

    def features(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3))

    def forward(self, x):
        return self.linear(self.features(x))


def structured_images(n, seed=0):
    """Images with per-image structure (so views of one image resemble each other more than others)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)


def test_bound_holds_at_every_step_in_x_and_z():
    ssl = SelfSupervised(TinyNet(), ContrastiveHead(8, 16, 8))
    x = structured_images(6)
    eps = 8 / 255
    p = ReversePurifier(ssl, budget=5, restarts=1, eps_rev=eps)
    res = p.space.descend(x, p.space.init(len(x)), 5, 0.05, "sign", keep_trajectory=True)
    for v in res.trajectory:
        assert v.abs().max() <= eps + 1e-7
    out = p(x)
    assert (out - x).abs().max() <= eps + 1e-6 and out.min() >= 0 and out.max() <= 1
    theta = Theta((3, 32, 32), z_dim=16, width=16, depth=1)
    with torch.no_grad():
        for blk in theta.blocks:
            blk.net[-1].weight.normal_()  # a non-trivial, large theta
        theta.head.weight.normal_()
    pz = ReversePurifier(ssl, budget=4, restarts=2, eps_rev=eps, steps=("adam", 0.5), theta=theta)
    res = pz.space.descend(x.repeat_interleave(2, 0), torch.randn(12, 16) * 10, 4, 0.5, "adam", keep_trajectory=True)
    for z in res.trajectory:
        assert pz.space.to_x(z).abs().max() <= eps + 1e-7
    assert ((pz(x) - x).abs().max() <= eps + 1e-6)


def test_head_training_lowers_held_out_loss_and_purification_lowers_it_further():
    net = TinyNet()
    train, held = structured_images(256, 0), structured_images(64, 1)
    torch.manual_seed(0)
    untrained_head = ContrastiveHead(8, 32, 16)
    untrained_head.bank = build_bank(net, untrained_head, train, 128)  # the same kind of negatives as the trained one
    untrained = SelfSupervised(net, untrained_head)
    head, history = train_head(net, train, epochs=8, batch_size=64, lr=3e-3, hidden=32, out_dim=16, progress=False,
                               bank_size=128)
    assert head.bank.shape == (128, 16)
    trained = SelfSupervised(net, head)
    torch.manual_seed(1)
    before = untrained(held).mean()
    torch.manual_seed(1)
    after = trained(held).mean()
    assert after < before - 0.1, (float(before), float(after))
    assert history[-1]["loss"] < history[0]["loss"]
    p = ReversePurifier(trained, budget=10, restarts=1, eps_rev=16 / 255)
    noisy = (held + (torch.rand_like(held) * 2 - 1) * 8 / 255).clamp(0, 1)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    with torch.no_grad():
        loss_before = trained(noisy, generator=gen()).mean()
        loss_after = trained(p(noisy), generator=gen()).mean()
    assert loss_after < loss_before


def test_contrastive_groups_keep_restarts_apart():
    e = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    grouped = contrastive_loss(e, e, groups=2)
    # rows 0, 2, 4 form one group: the same as computing the loss on that group alone
    assert torch.allclose(grouped[0::2], contrastive_loss(e[0::2], e[0::2]), atol=1e-6)


def test_bank_makes_each_loss_independent_of_the_batch_and_round_trips(tmp_path):
    g = torch.Generator().manual_seed(0)
    e1, e2, bank = (torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1) for n in (6, 6, 10))
    full = contrastive_loss(e1, e2, bank=bank)
    assert torch.allclose(contrastive_loss(e1[:2], e2[:2], bank=bank), full[:2], atol=1e-6)
    assert torch.allclose(contrastive_loss(e1[3:], e2[3:], bank=bank), full[3:], atol=1e-6)
    # in-batch negatives, by contrast, change with the company an image keeps
    assert not torch.allclose(contrastive_loss(e1[:2], e2[:2]), contrastive_loss(e1, e2)[:2], atol=1e-3)
    head = ContrastiveHead(8, 16, 4)
    head.bank = bank
    save_head(tmp_path / "head.pt", head)
    assert torch.equal(load_head(tmp_path / "head.pt").bank, bank)
    plain = ContrastiveHead(8, 16, 4)
    save_head(tmp_path / "plain.pt", plain)
    assert len(load_head(tmp_path / "plain.pt").bank) == 0


def test_bpda_and_unrolled_gradients_through_the_reverse_purifier():
    net = TinyNet(torch.float64)
    ssl = SelfSupervised(net, ContrastiveHead(8, 16, 8).double())
    p = ReversePurifier(ssl, budget=3, restarts=1, eps_rev=16 / 255, steps=("sgd", 0.01), differentiable=True)
    model = Defended(net, p)
    x = structured_images(3).double()

    def f(inp):
        torch.manual_seed(7)  # same random start and augmentations every call
        return model(inp)[:, 1].sum()

    assert_matches_finite_differences(f, x, [(0, 0, 5, 5), (1, 2, 10, 20), (2, 1, 31, 0)])
    p.differentiable = False
    xb = x.clone().requires_grad_(True)
    w = torch.randn_like(x)
    (gb,) = torch.autograd.grad((BPDA(p)(xb) * w).sum(), xb)
    assert torch.equal(gb, w)


def test_augment_is_differentiable_and_in_range():
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    v = augment(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and v.min() >= 0 and v.max() <= 1
    (g,) = torch.autograd.grad(v.sum(), x)
    assert g.abs().sum() > 0
