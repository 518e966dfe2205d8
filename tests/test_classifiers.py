"""cifar10.classifiers: the CIFAR ResNets, checkpoints, user models, RobustBench, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from _util import LOSSLESS_NPZ, RESNET_FILES, TINYNET_SOURCE, accuracy

from cifar10.classifiers import (
    CIFAR_RESNET_MEAN,
    CIFAR_RESNET_STD,
    CifarResNet,
    ModelError,
    Normalized,
    build_classifier,
    cifar_resnet,
    extract_state_dict,
)
from cifar10.data import load_cifar10

PARAMS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6}


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(RESNET_FILES))
def test_shared_resnet_weights_load_strictly(shared, name):
    path = shared(f"weights/{RESNET_FILES[name]}")
    model = build_classifier({"name": name, "weights": str(path)}, download=False)
    assert isinstance(model, Normalized) and isinstance(model.model, CifarResNet)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert _n_params(model) == pytest.approx(PARAMS[name], rel=0.03)   # the published sizes
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    own = model.model.state_dict()
    # old checkpoints carry no num_batches_tracked; BatchNorm fills it in on a strict load
    assert {k for k in own if not k.endswith("num_batches_tracked")} == {k[len("module."):] for k in state}
    for key in ("conv1.weight", "linear.weight", "linear.bias", "layer3.0.bn2.running_var"):
        assert torch.equal(own[key], state[f"module.{key}"])
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_cifar_resnet_depths_and_shapes():
    for depth, blocks in [(20, 3), (32, 5), (8, 1)]:
        net = cifar_resnet(depth)
        assert len(net.layer1) == len(net.layer2) == len(net.layer3) == blocks
        assert net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert cifar_resnet(20, num_classes=7).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ModelError, match="6n\\+2"):
        cifar_resnet(21)


@pytest.mark.parametrize("wrap", ["module_prefix", "state_dict_key", "plain"])
def test_resnet20_checkpoint_written_by_test(tmp_path, wrap):
    torch.manual_seed(0)
    src = cifar_resnet(20)
    state = src.state_dict()
    if wrap == "module_prefix":
        ckpt = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "best_prec1": 1.0}
    elif wrap == "state_dict_key":
        ckpt = {"state_dict": state}
    else:
        ckpt = state
    path = tmp_path / "r20.th"
    torch.save(ckpt, path)
    model = build_classifier({"name": "resnet20", "weights": str(path)}, download=False)
    for key, value in state.items():
        assert torch.equal(model.model.state_dict()[key], value), key
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = src.eval()((x - torch.tensor(CIFAR_RESNET_MEAN).view(1, 3, 1, 1))
                              / torch.tensor(CIFAR_RESNET_STD).view(1, 3, 1, 1))
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_extract_state_dict_strips_prefix_only_when_all_keys_have_it():
    t = torch.zeros(1)
    assert extract_state_dict({"model_state_dict": {"module.a": t}}) == {"a": t}
    assert set(extract_state_dict({"module.a": t, "b": t})) == {"module.a", "b"}
    with pytest.raises(ModelError, match="not a state dict"):
        extract_state_dict([t])


def test_missing_key_is_a_model_error(tmp_path):
    state = cifar_resnet(20).state_dict()
    del state["layer2.1.conv1.weight"]
    path = tmp_path / "broken.th"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelError, match="layer2.1.conv1.weight"):
        build_classifier({"name": "resnet20", "weights": str(path)}, download=False)


def test_wrong_depth_checkpoint_is_a_model_error(tmp_path):
    path = tmp_path / "r32.th"
    torch.save(cifar_resnet(32).state_dict(), path)
    with pytest.raises(ModelError, match="do not fit"):
        build_classifier({"name": "resnet20", "weights": str(path)}, download=False)


def test_checkpoint_that_is_not_weights_only(tmp_path):
    path = tmp_path / "pickled_module.th"
    torch.save(nn.Linear(2, 2), path)       # a whole pickled module: refused by weights_only=True
    with pytest.raises(ModelError, match="weights_only"):
        build_classifier({"name": "resnet20", "weights": str(path)}, download=False)


def test_explicit_weights_path_missing(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        build_classifier({"name": "resnet20", "weights": str(tmp_path / "nope.th")}, download=False)


def test_normalized_equals_manual():
    torch.manual_seed(1)
    inner = nn.Conv2d(3, 4, 3)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    model = Normalized(inner, mean, std)
    x = torch.rand(2, 3, 8, 8)
    manual = inner((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(model(x), manual, atol=1e-6)
    assert set(model.state_dict()) >= {"mean", "std"}


# ----------------------------------------------------------------------------- user models

def _write_tinynet(tmp_path, num_classes=10, seed=0):
    file = tmp_path / "tiny_model.py"
    file.write_text(TINYNET_SOURCE)
    torch.manual_seed(seed)
    fc = nn.Linear(3072, num_classes)
    state = {"fc.weight": fc.weight.detach().clone(), "fc.bias": fc.bias.detach().clone()}
    weights = tmp_path / "tiny.pth"
    torch.save({"model": state}, weights)
    return file, weights, state


def test_file_py_class_with_kwargs_and_checkpoint(tmp_path):
    file, weights, state = _write_tinynet(tmp_path, num_classes=4)
    model = build_classifier({"name": f"{file}:TinyNet", "weights": str(weights), "kwargs": {"num_classes": 4}})
    assert type(model).__name__ == "TinyNet"
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), (x - 0.5).flatten(1) @ state["fc.weight"].T + state["fc.bias"], atol=1e-5)


def test_file_py_class_with_normalization(tmp_path):
    file, weights, state = _write_tinynet(tmp_path)
    model = build_classifier({"name": f"{file}:TinyNet", "weights": str(weights), "mean": [0.5, 0.5, 0.5],
                              "std": [0.25, 0.25, 0.25]})
    assert isinstance(model, Normalized)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = ((x - 0.5) / 0.25 - 0.5).flatten(1) @ state["fc.weight"].T + state["fc.bias"]
        assert torch.allclose(model(x), expected, atol=1e-4)
    with pytest.raises(ModelError, match="both"):
        build_classifier({"name": f"{file}:TinyNet", "mean": [0.5, 0.5, 0.5]})


def test_file_py_errors(tmp_path):
    file, weights, _ = _write_tinynet(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        build_classifier({"name": f"{tmp_path / 'absent.py'}:TinyNet"})
    with pytest.raises(ModelError, match="no attribute 'Missing'"):
        build_classifier({"name": f"{file}:Missing"})
    with pytest.raises(ModelError, match="model.kwargs"):
        build_classifier({"name": f"{file}:TinyNet", "kwargs": {"depth": 3}})
    with pytest.raises(ModelError, match="do not fit"):
        build_classifier({"name": f"{file}:TinyNet", "weights": str(weights), "kwargs": {"num_classes": 3}})


def test_module_class_spec():
    model = build_classifier({"name": "torch.nn:Flatten"})
    assert isinstance(model, nn.Flatten)
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        build_classifier({"name": "collections:OrderedDict"})
    with pytest.raises(ModelError, match="cannot import"):
        build_classifier({"name": "no_such_module_xyz:Net"})


@pytest.mark.parametrize("name", ["resnet99", "vgg16", ""])
def test_unknown_model_lists_choices(name):
    with pytest.raises(ModelError) as exc:
        build_classifier({"name": name})
    msg = str(exc.value)
    assert "unknown model.name" in msg
    for choice in ("resnet20", "resnet56", "robustbench:<name>", "file.py:Class"):
        assert choice in msg


def test_resnet20_missing_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path))
    monkeypatch.setenv("LANDSCAPE_WEIGHTS", str(tmp_path / "weights_dir"))
    with pytest.raises(ModelError) as exc:
        build_classifier({"name": "resnet20"}, download=False)
    msg = str(exc.value)
    assert "resnet20-12fca82f.th" in msg
    assert str(tmp_path / "weights" / "resnet20-12fca82f.th") in msg           # where to place it
    assert str(tmp_path / "weights_dir" / "resnet20-12fca82f.th") in msg       # what was tried
    assert "model.weights" in msg and "downloading is disabled" in msg
    assert not (tmp_path / "weights").exists()                                 # nothing created


def test_resnet20_found_through_landscape_weights_and_cache(tmp_path, monkeypatch):
    torch.save({"state_dict": cifar_resnet(20).state_dict()}, tmp_path / "resnet20-12fca82f.th")
    monkeypatch.setenv("LANDSCAPE_WEIGHTS", str(tmp_path))
    assert isinstance(build_classifier({"name": "resnet20"}, download=False), Normalized)
    monkeypatch.delenv("LANDSCAPE_WEIGHTS")
    cache = tmp_path / "cache"
    (cache / "weights").mkdir(parents=True)
    (tmp_path / "resnet20-12fca82f.th").rename(cache / "weights" / "resnet20-12fca82f.th")
    monkeypatch.setenv("LANDSCAPE_CACHE", str(cache))
    assert isinstance(build_classifier({"name": "resnet20"}, download=False), Normalized)


def test_resnet20_accuracy_on_lossless_cifar10(shared):
    weights, npz = shared(f"weights/{RESNET_FILES['resnet20']}", LOSSLESS_NPZ)
    model = build_classifier({"name": "resnet20", "weights": str(weights)}, download=False)
    data = load_cifar10(npz, "test", download=False)
    acc = accuracy(model, data.images[:200], data.labels[:200])
    assert acc > 0.85


def test_shared_robust_model_loads_as_file_class(shared):
    models_py, weights = shared("weights/robust/models.py", "weights/robust/resnet2b.pth")
    model = build_classifier({"name": f"{models_py}:resnet2b", "weights": str(weights)}, download=False)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


# ----------------------------------------------------------------------------- RobustBench

def test_import_robustbench_gives_load_model():
    from cifar10.robustbench_compat import import_robustbench

    rb = import_robustbench()
    assert rb.__name__ == "robustbench"
    assert callable(rb.load_model)
    import sys

    assert "autoattack" in sys.modules and "pkg_resources" in sys.modules
    assert callable(sys.modules["pkg_resources"].resource_filename)


def test_robustbench_unknown_name(tmp_path):
    with pytest.raises(ModelError, match="no CIFAR-10 Linf model named 'No_Such_Model_2099'"):
        build_classifier({"name": "robustbench:No_Such_Model_2099", "model_dir": str(tmp_path)}, download=False)
