"""3D human pose from 2D keypoints on CMU motion capture (task ``pose-cmu``): pose VAE, camera,
inversion, analyses, keypoint files."""
from tasks.task import Task


def build(cfg: dict):
    from landscape.io import resolve_path
    from tasks.pose.problem import build_pose_problem

    return build_pose_problem(cfg, resolve_path(cfg["generator"]["weights"]))


def analyses(*args, **kwargs):
    from tasks.pose.analyses import run_all

    return run_all(*args, **kwargs)


TASK = Task(
    name="pose-cmu", build=build, analyses=analyses,
    defaults={
        # root: null = $LANDSCAPE_MOCAP, else ./data/mocap-cmu (../shared/data/mocap-cmu on this project's machines)
        "data": {"root": None, "every": 4, "heldout_every": 8},
        "generator": {"weights": "checkpoints/pose-vae-cmu.pt"},
        "camera": {"azimuth": [-180.0, 180.0], "elevation": [-5.0, 25.0], "distance": [4000.0, 6000.0],
                   "focal": [900.0, 1100.0], "principal": [500.0, 500.0], "aim_jitter_mm": 300.0},
        "problem": {"drop_prob": 0.1, "sigma_px": 5.0, "prior_weight": 1.0, "noise_px": 0.0},
    },
    # Adam steps in Z (plain SGD through an unrolled theta diverged: see checkpoints/theta-pose-cmu.md);
    # z_dim 64 > dim X = 16 learned faster than z_dim 16 in trial runs.
    theta={"iterations": 4000, "batch_size": 64, "unroll": 10, "lr_z": 0.3, "rule": "adam", "theta_lr": 1e-3,
           "z_dim": 64, "width": 256, "depth": 2, "skip": "linear", "buffer_size": 4096, "buffer_fraction": 0.5,
           "collect_every": 10, "collect_steps": 30, "grad_clip": 10.0, "checkpoint_every": 100},
    invert={
        "theta": {"weights": "checkpoints/theta-pose-cmu.pt"},
        "invert": {"budgets": [1, 2, 5, 10, 20, 50, 100, 200], "n_images": 500, "n_tune": 128, "batch_size": 500,
                   # one candidate set for both spaces: the baseline gets the same tuning care as theta
                   "search": {"sgd": [0.03, 0.1, 0.3, 1.0], "adam": [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]},
                   "plot_metric": "mpjpe"},
        "analyses": {"run": ["figure", "hypotheses", "action", "baseline"], "n_images": 300, "hypotheses": 8,
                     "clip": "13_11", "clip_every": 4, "clip_frames": 100, "action_steps": 200,
                     "figure_budgets": [10, 50, 200], "baseline_iterations": 4000, "baseline_width": 512},
        # invert --task pose-cmu --keypoints FILE: M starts on the first frame, the best one warm-starts the next
        "keypoints": {"space": "Z", "hypotheses": 8, "steps": 100, "warm_steps": 30, "rule_x": "adam", "lr_x": 0.1},
    },
)
