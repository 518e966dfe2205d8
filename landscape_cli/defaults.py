"""Every key ``landscape eval`` understands, with its default (mirrored in configs/default.yaml)."""

EVAL_DEFAULTS = {
    "seed": 0,
    "device": "auto",          # auto | cpu | cuda | cuda:N
    "threads": 0,              # torch CPU threads; 0 keeps torch's default
    "model": {
        "name": "resnet20",    # resnet20|32|44|56, robustbench:<name>, module:Class, path/file.py:Class
        "weights": None,       # checkpoint path; resnets fall back to $LANDSCAPE_WEIGHTS, the cache, a download
        "kwargs": {},
        "mean": None,          # input normalization applied inside the model (resnets: their own statistics)
        "std": None,
        "strict": True,
        "model_dir": None,     # robustbench cache (default ~/.cache/landscape/robustbench)
        "threat_model": "Linf",
    },
    "data": {
        "root": None,          # null: $LANDSCAPE_DATA, else ./data
        "split": "test",
        "n_examples": 1000,    # 0 or null: the whole split
        "selection": "random",  # random (by seed) | first
        "download": True,      # torchvision download when the root holds nothing
    },
    "eval": {
        "batch_size": 200,
        "shard_size": None,    # images per shard (the unit of work, resume and retry); a multiple of batch_size
        "progress": True,
    },
    "ray": {
        "address": None,       # null: start a local Ray and stop it at the end; "auto" or host:port joins a cluster
        "num_workers": None,   # null: what the cluster offers; 0: run in this process without Ray
        "gpus_per_worker": None,  # null: 1 when the cluster has GPUs, else 0
        "cpus_per_worker": 1,
        "max_restarts": 3,     # restarts of a dead actor; its shard is redone
    },
    "defenses": ["none"],     # none | purify-x | purify-z (generator) | reverse-x | reverse-z (reverse attack)
    "defense": {
        "budgets": [0, 1, 2, 5, 10, 20, 50, 100, 200],
        "restarts": 4,
        "modes": ["nonadaptive", "bpda"],   # nonadaptive | bpda | eot | bpda+eot | unrolled
        "eot_draws": 8,
        "unrolled_max_gb": 4.0,
        "generator": {"name": "dcgan", "weights": "checkpoints/dcgan-cifar10.pt", "kwargs": {}},
        "theta": "checkpoints/theta-gan-cifar10.pt",
        "step_sizes": "checkpoints/gan-cifar10-step-sizes.csv",  # tuned (rule, lr) per space and K, or {K: [rule, lr]}
        # reverse-x / reverse-z (the self-supervised reverse attack of Mao et al. 2021)
        "ssl_head": "checkpoints/ssl-head-resnet20.pt",
        "reverse_theta": "checkpoints/theta-reverse-cifar10.pt",
        "eps_rev": "8/255",
        "reverse_steps": None,  # null: sign steps of eps_rev / K in X, theta's own rule in Z; or {K: [rule, lr]}
    },
    "attacks": ["none", "fgsm", "pgd"],
    "eps": {"Linf": "8/255", "L2": 0.5},
    "attack_params": {},       # per attack, e.g. attack_params.pgd.steps=20
}

OPEN_SECTIONS = ("attack_params", "model.kwargs", "defense.generator.kwargs", "defense.step_sizes")

GENERATOR_DEFAULTS = {
    "seed": 0,
    "device": "auto",
    "threads": 0,
    "data": {"root": None, "split": "train", "n_examples": 0, "selection": "first", "download": True},
    "generator": {"latent_dim": 128, "width": 64},
    "train": {"epochs": 10, "batch_size": 128, "lr": 2.0e-4, "progress": True},
}

# Per task: the theta training settings (TrainConfig fields) and the invert settings.
THETA_DEFAULTS = {
    "gan-cifar10": {
        "theta": {"iterations": 800, "batch_size": 32, "unroll": 5, "lr_z": 30.0, "rule": "sgd", "theta_lr": 1e-3,
                  "z_dim": None, "width": 256, "depth": 2, "skip": "linear", "buffer_size": 4096, "buffer_fraction": 0.5,
                  "collect_every": 10, "collect_steps": 20, "grad_clip": 10.0, "checkpoint_every": 50},
    },
}

# z = an image-sized perturbation (3072 numbers) with a fixed identity skip (theta 7.4 MB); Adam in Z.
# Sign steps, SGD (lr_z 100) and a 256-dim z were tried too: none learned (checkpoints/theta-reverse-cifar10.md).
THETA_DEFAULTS["reverse-cifar10"] = {
    "theta": {"iterations": 400, "batch_size": 16, "unroll": 5, "lr_z": 0.2, "rule": "adam", "theta_lr": 1e-4,
              "z_dim": None, "width": 256, "depth": 2, "skip": "identity", "buffer_size": 1024, "buffer_fraction": 0.5,
              "collect_every": 10, "collect_steps": 10, "grad_clip": 10.0, "checkpoint_every": 25},
}

INVERT_DEFAULTS = {
    "gan-cifar10": {
        "theta": {"weights": "checkpoints/theta-gan-cifar10.pt"},
        "invert": {"budgets": [1, 2, 5, 10, 20, 50, 100, 200], "n_images": 200, "n_tune": 64, "batch_size": 200,
                   "x_search": {"sgd": [10, 30, 100, 300], "adam": [0.03, 0.1, 0.3]},
                   "z_search": {"sgd": [10, 20, 30, 60]}, "plot_metric": "mse"},
        "analyses": {"run": ["ood", "masked", "landscape"], "n_images": 100, "n_masked": 32, "hypotheses": 4,
                     "encoder_iterations": 1500},
    },
}

# Keys that change how a run is executed, not its results: a resumed run may change them.
EXECUTION_KEYS = ("ray", "eval.progress", "eval.shard_size", "threads")

SSL_DEFAULTS = {
    "seed": 0,
    "threads": 0,
    "model": dict(EVAL_DEFAULTS["model"]),
    "data": {"root": None, "n_examples": 0, "n_heldout": 500, "download": True},
    "train": {"epochs": 3, "batch_size": 256, "lr": 1.0e-3, "temperature": 0.2, "hidden": 256, "out_dim": 128,
              "bank_size": 1024, "progress": True},   # bank_size: fixed negatives for purification
}

CLASSIFIER_DEFAULTS = {
    "seed": 0,
    "threads": 0,
    "device": "cpu",
    "model": dict(EVAL_DEFAULTS["model"]),
    "data": {"root": None, "n_train": 5000, "n_heldout": 500, "download": True},
    "purifier": {"defense": "purify-z", "budget": 10, "restarts": 1},
    "defense": dict(EVAL_DEFAULTS["defense"]),
    "train": {"epochs": 5, "lr": 1.0e-3, "batch_size": 128, "progress": True},
}

# ---- pose inversion on CMU motion capture (task "pose-cmu") ---------------------------------------------
POSE_GENERATOR_DEFAULTS = {
    "seed": 0,
    "threads": 0,
    "data": {"root": None, "every": 4, "heldout_every": 8},   # root: null = $LANDSCAPE_MOCAP, else data/mocap-cmu
    "generator": {"latent_dim": 16, "hidden": 256, "depth": 2},
    "train": {"iterations": 20000, "batch_size": 256, "lr": 1.0e-3, "beta": 1.0, "sigma_mm": 20.0, "warmup": 1000,
              "progress": True},
}

# Adam steps in Z (plain SGD through an unrolled theta diverged: see checkpoints/theta-pose-cmu.md);
# z_dim 64 > dim X = 16 learned faster than z_dim 16 in trial runs.
THETA_DEFAULTS["pose-cmu"] = {
    "theta": {"iterations": 4000, "batch_size": 64, "unroll": 10, "lr_z": 0.3, "rule": "adam", "theta_lr": 1e-3,
              "z_dim": 64, "width": 256, "depth": 2, "skip": "linear", "buffer_size": 4096, "buffer_fraction": 0.5,
              "collect_every": 10, "collect_steps": 30, "grad_clip": 10.0, "checkpoint_every": 100},
}

INVERT_DEFAULTS["pose-cmu"] = {
    "theta": {"weights": "checkpoints/theta-pose-cmu.pt"},
    "invert": {"budgets": [1, 2, 5, 10, 20, 50, 100, 200], "n_images": 500, "n_tune": 128, "batch_size": 500,
               "x_search": {"sgd": [0.03, 0.1, 0.3, 1.0], "adam": [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]},
               "z_search": {"adam": [0.1, 0.2, 0.3, 0.5]}, "plot_metric": "mpjpe"},
    "analyses": {"run": ["figure", "hypotheses", "action", "baseline"], "n_images": 300, "hypotheses": 8,
                 "clip": "13_11", "clip_every": 4, "clip_frames": 100, "action_steps": 200,
                 "figure_budgets": [10, 50, 200], "baseline_iterations": 4000, "baseline_width": 512},
    # invert --task pose-cmu --keypoints FILE: M starts on the first frame, the best one warm-starts the next
    "keypoints": {"space": "Z", "hypotheses": 8, "steps": 100, "warm_steps": 30, "rule_x": "adam", "lr_x": 0.1},
}
