"""The self-supervised reverse attack as an inversion problem (task ``reverse-cifar10``); the reverse
purifier is this problem with the input image as its target."""
from tasks.task import Task


def build(cfg: dict):
    from cifar10.classifiers import build_classifier
    from cifar10.data import train_and_heldout
    from cifar10.ssl_head import SelfSupervised, load_head
    from landscape.config import parse_number
    from landscape.io import resolve_path
    from tasks.reverse.problem import ReverseAttackProblem, fgsm_images

    classifier = build_classifier(cfg["model"], download=bool(cfg["data"]["download"]))
    ssl = SelfSupervised(classifier, load_head(resolve_path(cfg["ssl_head"])))
    train, test = train_and_heldout(cfg["data"], cfg["seed"])
    attacked = fgsm_images(classifier, train.images, train.labels) if cfg.get("attacked_targets", True) else None
    return ReverseAttackProblem(ssl, parse_number(cfg["eps_rev"], name="eps_rev"), train.images, test.images,
                                attacked)


def record(cfg: dict) -> dict:
    """A reverse theta maps Z into the eps_rev-ball of one head's objective: both are kept with it."""
    from landscape.config import parse_number

    return {"eps_rev": parse_number(cfg["eps_rev"], name="eps_rev"), "ssl_head": str(cfg["ssl_head"])}


TASK = Task(
    name="reverse-cifar10", build=build, record=record,
    defaults={
        "data": {"root": None, "n_train": 5000, "n_heldout": 500, "download": True},
        "model": {"name": "resnet20", "weights": None, "kwargs": {}, "mean": None, "std": None, "strict": True,
                  "model_dir": None, "threat_model": "Linf"},
        "ssl_head": "checkpoints/ssl-head-resnet20.pt",
        "eps_rev": "8/255",
        "attacked_targets": True,
    },
    # z = an image-sized perturbation (3072 numbers) with a fixed identity skip (theta 7.4 MB); Adam in Z.
    # Sign steps, SGD (lr_z 100) and a 256-dim z were tried too: none learned (checkpoints/theta-reverse-cifar10.md).
    theta={"iterations": 400, "batch_size": 16, "unroll": 5, "lr_z": 0.2, "rule": "adam", "theta_lr": 1e-4,
           "z_dim": None, "width": 256, "depth": 2, "skip": "identity", "buffer_size": 1024, "buffer_fraction": 0.5,
           "collect_every": 10, "collect_steps": 10, "grad_clip": 10.0, "checkpoint_every": 25},
    invert={
        "theta": {"weights": "checkpoints/theta-reverse-cifar10.pt"},
        "invert": {"budgets": [1, 2, 5, 10, 20, 40], "n_images": 200, "n_tune": 64, "batch_size": 200,
                   # one grid for both spaces: X's steps are these multiples of eps_rev, Z's of 1 (its prior's std)
                   "search": {"sign": [0.025, 0.0625, 0.125, 0.25, 0.5], "adam": [0.05, 0.1, 0.2, 0.5]},
                   "plot_metric": "ssl_loss"},
        "analyses": {"run": []},
    },
)
