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
        "progress": True,
    },
    "defenses": ["none"],
    "attacks": ["none", "fgsm", "pgd"],
    "eps": {"Linf": "8/255", "L2": 0.5},
    "attack_params": {},       # per attack, e.g. attack_params.pgd.steps=20
}

OPEN_SECTIONS = ("attack_params", "model.kwargs")
