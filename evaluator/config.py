"""Every key ``landscape eval`` understands, with its default (mirrored in configs/default.yaml)."""
from cifar10.classifiers import MODEL_DEFAULTS
from defense.defenses import DEFENSE_DEFAULTS

EVAL_DEFAULTS = {
    "seed": 0,
    "runs": 1,                 # repeats of every randomized cell, with seeds derived from seed (run 0 uses seed)
    "device": "auto",          # auto | cpu | cuda | cuda:N
    "threads": 0,              # torch CPU threads; 0 keeps torch's default
    "model": MODEL_DEFAULTS,
    "data": {
        "root": None,          # null: $LANDSCAPE_DATA, else ./data
        "split": "test",
        "n_examples": 1000,    # 0 or null: the whole split
        "selection": "random",  # random (by seed) | first
        "indices": None,       # exactly these source indices (a list, or a file of them), instead of n_examples/selection
        "download": True,      # torchvision download when the root holds nothing
    },
    "eval": {
        "batch_size": 200,
        "shard_size": None,    # images per shard (the unit of work, resume and retry); a multiple of batch_size
        "progress": True,
    },
    "ray": {
        "address": None,       # null: start a local Ray and stop it at the end; "auto" or host:port joins a cluster
        "num_workers": None,   # null: a cluster's offer; one machine: local Ray only with 2+ GPUs (uses_ray); 0: no Ray
        "gpus_per_worker": None,  # null: 1 when the cluster has GPUs, else 0
        "cpus_per_worker": 1,
        "max_restarts": 3,     # restarts of a dead actor; its shard is redone
    },
    "defenses": ["none"],     # none | purify-x | purify-z (generator) | reverse-x | reverse-z (reverse attack) | file.py:Class
    "defense": DEFENSE_DEFAULTS,
    "attacks": ["none", "fgsm", "pgd"],
    "eps": {"Linf": "8/255", "L2": 0.5},
    "attack_params": {},       # per attack, e.g. attack_params.pgd.steps=20
}

OPEN_SECTIONS = ("attack_params", "model.kwargs", "defense.generator.kwargs", "defense.step_sizes",
                 "defense.attack_modes", "defense.kwargs")

# Keys that change how a run is executed, not its results: a resumed run may change them.
EXECUTION_KEYS = ("ray", "eval.progress", "eval.shard_size", "threads")
