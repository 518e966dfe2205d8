"""Your own defense as ``file.py:Class``: every mode, in-process and on Ray, the protocol's errors,
the Python API against the CLI, and the two examples' published pattern on the real ResNet-20."""
from __future__ import annotations

import doctest
import importlib.util

import pandas as pd
import pytest
from _util import REPO

import landscape
from evaluator.results import TIMING_COLUMNS
from landscape_cli.main import main

EPS = 0.08
RRP = f"{REPO / 'examples' / 'random_resize_pad.py'}:RandomResizePad"
JPEG = f"{REPO / 'examples' / 'jpeg.py'}:JpegCompression"
ALL_MODES = "defense.modes=[nonadaptive, bpda, eot, bpda+eot, unrolled]"


def args(tiny, out, *extra):
    return ["eval", "--out", str(out), "--quiet", f"model.name={tiny.spec}", f"model.weights={tiny.weights}",
            f"data.root={tiny.npz}", "data.n_examples=16", "data.download=false", "eval.batch_size=8",
            "attacks=[none, pgd]", f"eps.Linf={EPS}", "attack_params.pgd.alpha=0.02", "attack_params.pgd.steps=3",
            "device=cpu", "defense.budgets=[0]", "defense.eot_draws=2", "seed=1", *extra]


def table(out):
    return pd.read_parquet(out / "results.parquet").drop(columns=TIMING_COLUMNS)


def run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def inproc(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("user") / "inproc"
    assert main(args(tiny, out, f"defenses=[none, {RRP}, {JPEG}]", ALL_MODES, "ray.num_workers=0")) == 0
    return out


def test_every_mode_runs_and_is_named(inproc):
    res = table(inproc)
    rrp = res[res["defense"] == "random-resize-pad"]
    assert set(rrp["attack"]) >= {"none", "pgd+nonadaptive", "pgd+bpda", "pgd+eot", "pgd+bpda+eot", "pgd+unrolled"}
    assert set(rrp["landscape"]) == {"x"}
    # JPEG declares differentiable = False: its exact-gradient cells are skipped, with the reason
    jpeg = res[res["defense"] == "jpeg"]
    assert set(jpeg["attack"]) >= {"none", "pgd+nonadaptive", "pgd+bpda", "pgd+bpda+eot"}
    assert not {"pgd+eot", "pgd+unrolled"} & set(jpeg["attack"])
    skipped = pd.read_csv(inproc / "skipped.csv")
    assert set(skipped["attack"]) == {"pgd+eot", "pgd+unrolled"} and set(skipped["defense"]) == {"jpeg"}
    assert skipped["reason"].str.contains("differentiable").all()
    # the examples keep no counts: their compute columns are unknown (NaN), not a claimed 0
    assert res.loc[res["defense"] != "none", "purifier_forward"].isna().all()
    assert (res.loc[res["defense"] == "none", "purifier_forward"] == 0).all()
    # the attack does work here: accuracies strictly between 0 and 1 somewhere under attack
    attacked = res[res["attack"] != "none"]
    assert ((attacked["accuracy"] > 0) & (attacked["accuracy"] < 1)).any()


def test_two_ray_workers_give_the_same_table(tiny, inproc, tmp_path):
    out = tmp_path / "ray"
    assert main(args(tiny, out, f"defenses=[none, {RRP}, {JPEG}]", ALL_MODES, "ray.num_workers=2")) == 0
    pd.testing.assert_frame_equal(table(out), table(inproc))


def test_probes_see_the_randomized_defense(inproc):
    probes = pd.read_csv(inproc / "probes.csv")
    deployed = probes[probes["mode"] == "none"].set_index("defense")["randomized"]
    assert bool(deployed["random-resize-pad"]) and not bool(deployed["jpeg"]) and not bool(deployed["none"])


def test_runs_repeat_only_a_randomized_defense(tiny, tmp_path):
    out = tmp_path / "runs"
    assert main(args(tiny, out, f"defenses=[{RRP}, {JPEG}]", "attacks=[none]", "runs=2", "ray.num_workers=0")) == 0
    res = table(out).set_index("defense")["runs"]
    assert res["random-resize-pad"] == 2 and res["jpeg"] == 1


BROKEN = {
    "no_flags": ("import torch.nn as nn\nclass D(nn.Module):\n    def __init__(self, budget=0): super().__init__()\n"
                 "    def forward(self, x): return x\n", "randomized and differentiable"),
    "one_flag": ("import torch.nn as nn\nclass D(nn.Module):\n    randomized = False\n"
                 "    def __init__(self, budget=0): super().__init__()\n    def forward(self, x): return x\n",
                 "differentiable"),
    "not_a_module": ("class D:\n    randomized = False\n    differentiable = True\n", "not a torch.nn.Module"),
    "no_budget": ("import torch.nn as nn\nclass D(nn.Module):\n    randomized = False\n    differentiable = True\n"
                  "    def __init__(self): super().__init__()\n    def forward(self, x): return x\n", "budget"),
    "no_forward": ("import torch.nn as nn\nclass D(nn.Module):\n    randomized = False\n    differentiable = True\n"
                   "    def __init__(self, budget=0): super().__init__()\n", "forward"),
    "wrong_shape": ("import torch.nn as nn\nclass D(nn.Module):\n    randomized = False\n    differentiable = True\n"
                    "    def __init__(self, budget=0): super().__init__()\n    def forward(self, x): return x[:, :1]\n",
                    "shape"),
    "builtin_name": ("import torch.nn as nn\nclass D(nn.Module):\n    name = 'reverse-x'\n    randomized = False\n"
                     "    differentiable = True\n    def __init__(self, budget=0): super().__init__()\n"
                     "    def forward(self, x): return x\n", "built-in"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_defense_without_the_protocol_gets_one_clear_error(tiny, tmp_path, capsys, case):
    source, expected = BROKEN[case]
    path = tmp_path / f"{case}.py"
    path.write_text(source)
    out = tmp_path / "out"
    rc, captured = run(args(tiny, out, f"defenses=[none, {path}:D]", "ray.num_workers=0"), capsys)
    assert rc == 2
    assert expected in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not (out / "results.csv").exists()


def test_unknown_kwarg_and_missing_file_are_named(tiny, tmp_path, capsys):
    rc, captured = run(args(tiny, tmp_path / "a", f"defenses=[{JPEG}]", "defense.kwargs={qualty: 50}",
                            "ray.num_workers=0"), capsys)
    assert rc == 2 and "qualty" in captured.err
    rc, captured = run(args(tiny, tmp_path / "b", "defenses=[nowhere/defense.py:D]", "ray.num_workers=0"), capsys)
    assert rc == 2 and "not found" in captured.err


def test_the_api_gives_the_cli_table(tiny, inproc):
    """landscape.evaluate with the same settings as the CLI run: the same table, from memory and from a folder."""
    kwargs = dict(model=tiny.spec, defense=[RRP, JPEG], attacks=["none", "pgd"], budgets=[0], data=str(tiny.npz),
                  progress=False, model__weights=str(tiny.weights), data__n_examples=16, data__download=False,
                  eval__batch_size=8, eps={"Linf": EPS}, attack_params={"pgd": {"alpha": 0.02, "steps": 3}},
                  device="cpu", defense__eot_draws=2, defense__modes=["nonadaptive", "bpda", "eot", "bpda+eot",
                                                                       "unrolled"],
                  seed=1, ray__num_workers=0)
    api, per_image = landscape.evaluate(per_image=True, **kwargs)
    cli = table(inproc)
    pd.testing.assert_frame_equal(api.drop(columns=TIMING_COLUMNS).reset_index(drop=True), cli)
    assert len(per_image) == 16 * len(api[~api["attack"].str.startswith("suite[")])


def test_the_api_takes_a_module_a_class_and_tensors(tiny):
    spec = importlib.util.spec_from_file_location("_rrp_example", REPO / "examples" / "random_resize_pad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    res = landscape.evaluate(tiny.model, defense=module.RandomResizePad, attacks=["pgd"], budgets=[0],
                             data=(tiny.x[:8], tiny.y[:8]), eps={"Linf": EPS}, device="cpu", progress=False,
                             ray__num_workers=0, attack_params={"pgd": {"steps": 2}})
    assert list(res["defense"].unique()) == ["none", "random-resize-pad"]
    assert "none" in set(res["attack"])     # clean accuracy is always measured
    assert set(res["model"]) == {"python:TinyNet"}


def test_the_api_refuses_to_write_in_memory_objects(tiny, tmp_path):
    with pytest.raises(landscape.LandscapeError, match="in-memory"):
        landscape.evaluate(tiny.model, data=(tiny.x, tiny.y), out=tmp_path / "x", progress=False)
    with pytest.raises(landscape.LandscapeError, match=r"\[0, 1\]"):
        landscape.evaluate(tiny.model, data=(tiny.x * 3, tiny.y), progress=False)


def test_the_examples_doctests_run():
    import evaluator.api

    for path in sorted((REPO / "examples").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_example_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, path
    failed, attempted = doctest.testmod(evaluator.api)
    assert attempted > 0 and failed == 0


@pytest.mark.parametrize("example, adaptive", [("jpeg", "pgd+bpda"), ("random-resize-pad", "pgd+eot")])
def test_examples_show_the_published_pattern(shared, tmp_path, capsys, example, adaptive):
    """On the real ResNet-20 at Athalye et al.'s 8/255 (first 40 lossless test images): well above zero
    non-adaptively, near zero under BPDA (JPEG) or EOT (random resizing and padding)."""
    weights = shared("weights/resnet20-12fca82f.th")
    data = shared("data/cifar10-lossless/cifar10_test_first1000.npz")
    out = tmp_path / example
    extra = ["defense.eot_draws=4"] if example == "random-resize-pad" else ["attack_params.pgd.steps=20"]
    rc, captured = run(["eval", "--config", str(REPO / "examples" / f"{example}.yaml"), "--out", str(out), "--quiet",
                        f"model.weights={weights}", f"data.root={data}", "data.n_examples=40", "eval.batch_size=40",
                        "ray.num_workers=0", "device=cpu", *extra], capsys)
    assert rc == 0, captured.err
    res = table(out).set_index(["defense", "attack"])["accuracy"]
    assert res[("none", "pgd")] <= 0.05                        # the bare model is broken
    assert res[(example, "none")] >= 0.7                       # clean accuracy after the defense
    assert res[(example, "pgd+nonadaptive")] >= 0.15           # the defense "works" non-adaptively
    assert res[(example, adaptive)] <= 0.05                    # and is broken by the adaptive attack


def test_the_readme_api_example_runs_as_written(shared, monkeypatch):
    """The README's Python API example, run from the repository root as a user would."""
    weights, _ = shared("weights/resnet20-12fca82f.th", "data/cifar10-lossless/cifar10_test_first1000.npz")
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The Python API"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")].replace("../shared/", f"{weights.parents[1]}/")   # wherever ../shared is
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    table = namespace["table"]
    res = table.set_index(["defense", "attack"])["accuracy"]
    assert res[("jpeg", "pgd+nonadaptive")] > res[("jpeg", "pgd+bpda")]


ITERATIVE = '''
import torch, torch.nn as nn, torch.nn.functional as F

class Smooth(nn.Module):
    """K steps of x <- (x + 3x3 box blur of x) / 2; counts its passes like a built-in purifier."""
    name = "smooth"
    landscape = "x"
    randomized = False
    differentiable = True

    def __init__(self, budget, restarts=1, weight=0.5):
        super().__init__()
        self.budget, self.restarts, self.weight = budget, restarts, weight
        self.passes = {"forward": 0, "backward": 0}

    def forward(self, x):
        kernel = torch.ones(x.shape[1], 1, 3, 3, dtype=x.dtype, device=x.device) / 9
        for _ in range(self.budget):
            x = (1 - self.weight) * x + self.weight * F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel,
                                                                groups=x.shape[1])
        self.passes["forward"] += self.budget * self.restarts * len(x)
        return x
'''


def test_an_iterative_user_defense_sweeps_k_with_its_own_counts(tiny, tmp_path):
    path = tmp_path / "smooth.py"
    path.write_text(ITERATIVE)
    out = tmp_path / "out"
    assert main(args(tiny, out, f"defenses=[none, {path}:Smooth]", "defense.budgets=[0, 1, 4]", "defense.restarts=2",
                     "defense.modes=[nonadaptive, unrolled]", "defense.kwargs={weight: 0.9}", "ray.num_workers=0")) == 0
    res = table(out)
    smooth = res[(res["defense"] == "smooth") & (res["attack"] == "none")].set_index("budget")
    assert list(smooth.index) == [0, 1, 4]
    # its own counter: K x R forward passes per image, per deployed call
    assert list(smooth["purifier_forward"]) == [0.0, 2.0, 8.0]
    unrolled = res[(res["defense"] == "smooth") & (res["attack"] == "pgd+unrolled")]
    assert len(unrolled) == 3 and set(unrolled["budget"]) == {0, 1, 4}
