"""The CIFAR-10 generator, the GAN-inversion task, and the train-theta / invert commands, on tiny models."""
import numpy as np
import pandas as pd
import pytest
import torch

from cifar10.generator import Generator, load_generator, save_generator, train_gan
from landscape.problem import ProblemError
from landscape_cli.main import main
from tasks.gan.problem import GanInversion, center_mask, psnr


def tiny_npz(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 32, 32, 3)) * 255).astype(np.uint8)
    np.savez(path, images=images, labels=np.arange(n) % 10)
    return path


def test_generator_range_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    G = Generator(latent_dim=8, width=4).eval()
    x = G(torch.randn(5, 8) * 10)
    assert x.shape == (5, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    save_generator(tmp_path / "g.pt", G)
    G2 = load_generator(tmp_path / "g.pt")
    z = torch.randn(3, 8)
    assert torch.allclose(G(z), G2(z))
    with pytest.raises(FileNotFoundError, match="train-generator"):
        load_generator(tmp_path / "missing.pt")


def test_gan_training_resumes(tmp_path):
    images = torch.rand(64, 3, 32, 32)
    first = train_gan(images, tmp_path, epochs=1, batch_size=32, latent_dim=8, width=4, progress=False)
    assert first["history"][0]["epoch"] == 1
    second = train_gan(images, tmp_path, epochs=2, batch_size=32, latent_dim=8, width=4, progress=False)
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert load_generator(tmp_path / "generator.pt").latent_dim == 8


def test_masked_loss_ignores_hidden_pixels_and_shapes_are_checked():
    G = Generator(latent_dim=8, width=4).eval()
    problem = GanInversion(G, torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    x = torch.randn(2, 8)
    img = problem.forward(x).detach()
    mask = center_mask(2)
    corrupted = img.clone()
    corrupted[..., 16:] = 1 - corrupted[..., 16:]           # change only the hidden half
    masked = problem.objective(x, {"image": corrupted, "mask": mask})
    assert torch.allclose(masked, torch.zeros(2), atol=1e-10)
    assert (problem.objective(x, corrupted) > 0).all()
    assert psnr(torch.tensor([0.01])).item() == pytest.approx(20.0)
    with pytest.raises(ProblemError, match="shape"):
        problem.forward(torch.randn(2, 9))
    with pytest.raises(ProblemError, match="do not match"):
        problem.objective(x, torch.rand(2, 3, 16, 16))


def test_train_theta_and_invert_end_to_end(tmp_path):
    data = tiny_npz(tmp_path / "tiny.npz")
    torch.manual_seed(0)
    save_generator(tmp_path / "g.pt", Generator(latent_dim=8, width=4).eval())
    common = [f"data.root={data}", f"generator.weights={tmp_path / 'g.pt'}", "data.n_train=32", "data.n_heldout=16",
              "data.download=false", "--quiet"]
    assert main(["train-theta", "--task", "gan-cifar10", "--out", str(tmp_path / "theta"), "theta.iterations=4",
                 "theta.batch_size=8", "theta.unroll=2", "theta.width=16", "theta.collect_steps=3",
                 "theta.checkpoint_every=2", *common]) == 0
    assert (tmp_path / "theta" / "theta.pt").is_file()
    curve = pd.read_csv(tmp_path / "theta" / "learning_curve.csv")
    assert list(curve["iteration"]) == [1, 2, 3, 4] and (tmp_path / "theta" / "learning_curve.png").is_file()
    out = tmp_path / "inv"
    assert main(["invert", "--task", "gan-cifar10", "--out", str(out), f"theta.weights={tmp_path / 'theta' / 'theta.pt'}",
                 "invert.budgets=[1,3]", "invert.n_images=8", "invert.n_tune=4",
                 "invert.search={sgd: [1, 10]}", "analyses.n_images=4",
                 "analyses.n_masked=2", "analyses.hypotheses=2", "analyses.encoder_iterations=2", *common]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["space"]) == {"X", "Z"} and set(summary["budget"]) == {1, 3}
    assert set(summary["metric"]) == {"mse", "psnr"}
    assert ((summary["ci_low"] < summary["mean"]) & (summary["mean"] < summary["ci_high"])).all()
    mse = summary[summary.metric == "mse"].set_index(["space", "budget"])["mean"]
    psnr = summary[summary.metric == "psnr"].set_index(["space", "budget"])["mean"]
    assert mse[("X", 3)] < mse[("X", 1)]                          # more steps, lower error
    # mean PSNR >= PSNR of the mean MSE (Jensen: -log is convex), and not far above it for 8 similar images
    for key in mse.index:
        assert 10 * np.log10(1 / mse[key]) <= psnr[key] + 1e-9 <= 10 * np.log10(1 / mse[key]) + 3
    for name in ("mse_vs_budget.png", "ood.csv", "masked.csv", "masked_grid.png", "landscape_slices.png"):
        assert (out / name).is_file(), name
    ood = pd.read_csv(out / "ood.csv")
    assert {"encoder (1 pass)", "descent in X", "descent in Z (learned)"} <= set(ood["method"])


def test_invert_errors(tmp_path, capsys):
    assert main(["invert", "--task", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err
    data = tiny_npz(tmp_path / "tiny.npz")
    save_generator(tmp_path / "g.pt", Generator(latent_dim=8, width=4).eval())
    code = main(["invert", "--task", "gan-cifar10", f"data.root={data}", f"generator.weights={tmp_path / 'g.pt'}",
                 f"theta.weights={tmp_path / 'none.pt'}", "--quiet", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "theta checkpoint not found" in capsys.readouterr().err


def test_invert_refuses_an_unknown_task_by_name(capsys):
    # every registered task has invert settings now (reverse-cifar10 gained them); an unknown one is named
    assert main(["invert", "--task", "magic"]) == 2
    err = capsys.readouterr().err
    assert "magic" in err and "gan-cifar10" in err


def test_x_and_z_are_tuned_over_the_same_candidates():
    """The baseline gets the same tuning care as the learned space: one candidate set for both."""
    from tasks.registry import TASKS

    for task in TASKS.values():
        if task.invert is not None:
            assert set(task.invert["invert"]) >= {"search"} and not {"x_search", "z_search"} & set(task.invert["invert"])
