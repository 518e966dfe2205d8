"""GAN inversion on CIFAR-10 (task ``gan-cifar10``); the generator purifier is this problem with the
input image as its target."""
from tasks.task import Task


def build(cfg: dict):
    from cifar10.data import train_and_heldout
    from cifar10.generator import build_generator
    from tasks.gan.problem import GanInversion

    train, test = train_and_heldout(cfg["data"], cfg["seed"])
    return GanInversion(build_generator(cfg["generator"]), train.images, test.images)


def analyses(*args, **kwargs):
    from tasks.gan.analyses import run_all

    return run_all(*args, **kwargs)


TASK = Task(
    name="gan-cifar10", build=build, analyses=analyses,
    defaults={
        "data": {"root": None, "n_train": 10000, "n_heldout": 500, "download": True},
        "generator": {"name": "dcgan", "weights": "checkpoints/dcgan-cifar10.pt", "kwargs": {}},
    },
    # The coordinate method with a theta that sees the target image (checkpoints/theta-gan-cifar10-conditioned.md):
    # it beat the paper's unconditioned coordinate recipe (theta.condition=false theta.width=256
    # theta.iterations=621: checkpoints/theta-gan-cifar10-coordinate.md) at every K, and that one beat the
    # unrolled recipe (theta.method=unrolled theta.rule=sgd theta.lr_z=30 theta.theta_lr=1e-3 theta.batch_size=32
    # theta.buffer_size=4096 theta.collect_every=10 theta.iterations=800) in docs/ablation/gan-cifar10/.
    theta={"method": "coordinate", "condition": True, "iterations": 1500, "batch_size": 64, "unroll": 5, "lr_z": 0.1,
           "rule": "adam", "theta_lr": 1e-4, "weight_decay": 0.01, "z_dim": 128, "width": 512, "depth": 2,
           "skip": "linear", "buffer_size": 20000, "buffer_fraction": 0.5, "collect_every": 4, "collect_steps": 20,
           "collect_batch": 64, "grad_clip": 10.0, "checkpoint_every": 100},
    invert={
        # the same recipe trained 12,000 iterations (checkpoints/theta-gan-cifar10-conditioned-12k.md): better at every K
        "theta": {"weights": "checkpoints/theta-gan-cifar10-conditioned-12k.pt"},
        "invert": {"budgets": [1, 2, 5, 10, 20, 50, 100, 200], "n_images": 200, "n_tune": 64, "batch_size": 200,
                   # one candidate set for both spaces: the baseline gets the same tuning care as theta
                   # (Adam up to 1.0: with {0.03, 0.1, 0.3} both spaces chose 0.3, the grid's edge, at K >= 50)
                   "search": {"sgd": [10, 20, 30, 60, 100, 300], "adam": [0.03, 0.1, 0.3, 0.6, 1.0]},
                   "plot_metric": "mse"},
        "analyses": {"run": ["ood", "masked", "landscape"], "n_images": 100, "n_masked": 32, "hypotheses": 4,
                     "encoder_iterations": 1500},
    },
)
