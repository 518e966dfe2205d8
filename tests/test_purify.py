"""Generator purifier and the attacks on it: range, gradients, BPDA, EOT, memory cap, restarts."""
import pytest
import torch
import torch.nn as nn
from _util import assert_matches_finite_differences

from attacks.adaptive import BPDA, EOT, AdaptiveError, Defended, surrogate, unrolled_bytes
from defense.purifiers import GeneratorPurifier, PurifierError, resolve_step


class TinyG(nn.Module):
    """A smooth tiny generator: latent (N, 4) -> image (N, 3, 4, 4) in [0, 1]."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.latent_dim = 4
        self.lin = nn.Linear(4, 48).to(dtype)

    def forward(self, z):
        return torch.sigmoid(self.lin(z)).view(-1, 3, 4, 4)


class TinyClassifier(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(1)
        self.lin = nn.Linear(48, 3).to(dtype)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_output_in_generator_range_and_restarts_pick_the_best():
    G = TinyG()
    x = torch.rand(5, 3, 4, 4)
    torch.manual_seed(0)
    p = GeneratorPurifier(G, budget=3, restarts=6, steps=("adam", 0.1))
    out = p(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not out.requires_grad
    single = GeneratorPurifier(G, budget=3, restarts=1, steps=("adam", 0.1))
    torch.manual_seed(0)
    err_r = ((out - x) ** 2).flatten(1).mean(1)
    errs = torch.stack([((single(x) - x) ** 2).flatten(1).mean(1) for _ in range(6)])
    assert (err_r <= errs.mean(0) + 1e-6).all()  # the best of 6 restarts beats a typical single start


def test_differentiable_when_asked():
    G = TinyG()
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    p = GeneratorPurifier(G, budget=3, restarts=2, steps=("sgd", 1.0), differentiable=True)
    (g,) = torch.autograd.grad(p(x).sum(), x)
    assert g.abs().sum() > 0
    p.differentiable = False
    assert not p(x).requires_grad


def test_bpda_backward_is_identity():
    p = GeneratorPurifier(TinyG(), budget=2, restarts=2)
    x = torch.rand(3, 3, 4, 4, requires_grad=True)
    w = torch.randn(3, 3, 4, 4)
    out = BPDA(p)(x)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.equal(g, w)
    torch.manual_seed(0)
    ref = p(x.detach())
    torch.manual_seed(0)
    assert torch.allclose(BPDA(p)(x), ref)  # the forward is the purifier


def test_unrolled_gradients_match_finite_differences():
    G, C = TinyG(torch.float64), TinyClassifier(torch.float64)
    p = GeneratorPurifier(G, budget=4, restarts=1, steps=("sgd", 2.0), differentiable=True)
    model = Defended(C, p)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)

    def f(inp):
        torch.manual_seed(3)  # the same random start every time
        return model(inp)[0, 1]

    assert_matches_finite_differences(f, x, [(0, 0, 0, 0), (0, 1, 2, 3), (0, 2, 3, 1)], atol=1e-8)


def test_eot_averages_over_the_stated_number_of_draws():
    seen = []

    class Noisy(nn.Module):
        def forward(self, x):
            seen.append(len(x))
            return x.flatten(1)[:, :3] + torch.randn(len(x), 3)

    x = torch.rand(2, 3, 4, 4)
    torch.manual_seed(0)
    out = EOT(Noisy(), draws=5)(x)
    assert seen == [10]  # 5 draws of 2 images in one batch
    torch.manual_seed(0)
    logits = x.repeat(5, 1, 1, 1).flatten(1)[:, :3] + torch.randn(10, 3)
    expected = torch.softmax(logits, 1).view(5, 2, 3).mean(0).log()
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(AdaptiveError):
        EOT(Noisy(), draws=0)


def test_surrogates_and_memory_cap():
    G, C = TinyG(), TinyClassifier()
    p = GeneratorPurifier(G, budget=50, restarts=2)
    x = torch.rand(4, 3, 4, 4)
    assert surrogate(C, p, "nonadaptive") is C
    assert surrogate(C, None, "bpda") is C
    assert unrolled_bytes(p, x) > 0
    per_k = unrolled_bytes(GeneratorPurifier(G, budget=10, restarts=2), x)
    assert unrolled_bytes(GeneratorPurifier(G, budget=20, restarts=2), x) > 1.8 * per_k  # linear in K
    assert unrolled_bytes(GeneratorPurifier(G, budget=10, restarts=2), torch.rand(8, 3, 4, 4)) > per_k  # and in N
    with pytest.raises(AdaptiveError, match="GiB"):
        surrogate(C, p, "unrolled", max_gb=1e-9, batch=x)
    with pytest.raises(AdaptiveError, match="valid"):
        surrogate(C, p, "telepathy")
    model = surrogate(C, p, "eot", draws=3, max_gb=1.0, batch=x)
    assert model(x).shape == (4, 3)


def test_bad_purifier_settings():
    with pytest.raises(PurifierError, match="budget"):
        GeneratorPurifier(TinyG(), budget=-1)
    with pytest.raises(PurifierError, match="restarts"):
        GeneratorPurifier(TinyG(), budget=1, restarts=0)
    assert resolve_step({1: ("sgd", 1.0), 10: ("adam", 0.1)}, 8) == ("adam", 0.1)
    assert resolve_step(("sgd", 2), 8) == ("sgd", 2.0)


def test_budget_zero_keeps_attacks_running():
    """At K = 0 the purifier ignores its input; exact gradients are zero, not an error."""
    import torchattacks

    G, C = TinyG(), TinyClassifier()
    p = GeneratorPurifier(G, budget=0, restarts=2)
    model = surrogate(C, p, "unrolled", max_gb=1.0, batch=torch.rand(2, 3, 4, 4))
    adv = torchattacks.PGD(model, eps=8 / 255, steps=2)(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))
    assert adv.shape == (2, 3, 4, 4)


def test_generator_given_as_module_class_loads_and_purifies(tmp_path):
    from cifar10.classifiers import ModelError
    from defense.defenses import DefenseFactory

    (tmp_path / "mygen.py").write_text(
        "import torch, torch.nn as nn\n"
        "class Gen(nn.Module):\n"
        "    def __init__(self, latent_dim=6):\n"
        "        super().__init__(); self.latent_dim = latent_dim; self.lin = nn.Linear(latent_dim, 3 * 32 * 32)\n"
        "    def forward(self, z):\n"
        "        return torch.sigmoid(self.lin(z)).view(-1, 3, 32, 32)\n"
        "class NoLatent(nn.Module):\n"
        "    def forward(self, z):\n"
        "        return z\n")
    import importlib.util
    spec = importlib.util.spec_from_file_location("mygen_for_weights", tmp_path / "mygen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save({"state_dict": mod.Gen(latent_dim=6).state_dict()}, tmp_path / "gen.pt")
    cfg = {"restarts": 2, "step_sizes": None,
           "generator": {"name": f"{tmp_path / 'mygen.py'}:Gen", "weights": str(tmp_path / "gen.pt"),
                         "kwargs": {"latent_dim": 6}}}
    purifier = DefenseFactory(cfg, torch.device("cpu"), None, ["purify-x"]).purifier("purify-x", 3)
    assert purifier.problem.latent_shape == (6,)
    with torch.no_grad():    # images the plugged-in generator can make
        x = purifier.problem.G(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)))
    no_steps = DefenseFactory(cfg, torch.device("cpu"), None, ["purify-x"]).purifier("purify-x", 0)
    torch.manual_seed(1)
    out = purifier(x)
    torch.manual_seed(1)                                   # the same random starts, no steps
    start = no_steps(x)
    assert out.shape == (4, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    # three steps of the plugged-in generator's inversion bring its image closer to the input
    assert (((out - x) ** 2).flatten(1).mean(1) < ((start - x) ** 2).flatten(1).mean(1)).all()
    bad = dict(cfg, generator={"name": f"{tmp_path / 'mygen.py'}:NoLatent", "weights": None, "kwargs": {}})
    with pytest.raises(ModelError, match="latent_dim"):
        DefenseFactory(bad, torch.device("cpu"), None, ["purify-x"]).purifier("purify-x", 3)


def test_purifier_aware_finetuning_improves_accuracy_on_purified_images():
    from defense.finetune import accuracy, finetune, purify_all

    # Class k: channel k is bright AND a bright band sits in place k. The classifier reads colour only;
    # the generator makes grey images only, so purification keeps the blob but drops the colour.
    def images(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 3, (n,), generator=g)
        x = torch.rand(n, 3, 4, 4, generator=g) * 0.2
        x[torch.arange(n), y] += 0.4
        x[y == 0, :, 0, :] += 0.4          # blobs that a horizontal flip keeps in place
        x[y == 1, :, 3, :] += 0.4
        x[y == 2, :, 1:3, 1:3] += 0.4
        return x.clamp(0, 1), y

    class GreyG(nn.Module):
        latent_dim = 16

        def forward(self, z):
            return torch.sigmoid(z).view(-1, 1, 4, 4).expand(-1, 3, 4, 4)

    xtr, ytr = images(300, 0)
    xte, yte = images(200, 1)
    clf = TinyClassifier()
    with torch.no_grad():  # logit_k = mean of channel k minus the mean of all channels
        w = torch.full((3, 3, 16), -1 / 48)
        for k in range(3):
            w[k, k] += 1 / 16
        clf.lin.weight.copy_(w.view(3, 48))
        clf.lin.bias.zero_()
    assert accuracy(clf, xte, yte) > 0.95
    purifier = GeneratorPurifier(GreyG(), budget=50, restarts=1, steps=("adam", 0.3))
    ptr, pte = purify_all(purifier, xtr), purify_all(purifier, xte, seed=1)
    before = accuracy(clf, pte, yte)
    finetune(clf, ptr, ytr, epochs=40, lr=3e-2, batch_size=50)
    after = accuracy(clf, pte, yte)
    assert before < 0.6 and after > 0.9, (before, after)


@pytest.mark.parametrize("mode", ["nonadaptive", "bpda", "eot", "bpda+eot", "unrolled"])
def test_attacks_leave_a_batchnorm_classifier_in_eval_mode(mode):
    """torchattacks restores the mode of the model it attacks: the surrogate must not hand the shared
    classifier back in training mode (batch statistics, drifting running stats)."""
    import torchattacks

    from attacks.queries import QueryCounter

    torch.manual_seed(0)
    clf = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3)).eval()
    with torch.no_grad():
        clf[1].running_mean.fill_(0.3)
        clf[1].running_var.fill_(2.0)
    stats = [t.clone() for t in (clf[1].running_mean, clf[1].running_var)]
    p = GeneratorPurifier(TinyG(), budget=2, restarts=1, steps=("adam", 0.1))
    model = surrogate(clf, p, mode, draws=2, batch=torch.rand(2, 3, 4, 4))
    # as the evaluator runs it: through the query counter, which must not hand it back in training mode either
    counted = QueryCounter(model)
    torchattacks.PGD(counted, eps=0.1, alpha=0.05, steps=2)(torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0]))
    assert not any(m.training for m in clf.modules())
    assert torch.equal(clf[1].running_mean, stats[0]) and torch.equal(clf[1].running_var, stats[1])
    assert counted.counts() == (2 * 4, 2 * 4)
