"""Classifier registry: every model takes images in [0, 1] and normalizes inside.

Names:

* ``resnet20|32|44|56`` -- the CIFAR ResNets of He et al. 2016 (3 stages of 16/32/64
  channels, parameter-free "option A" shortcuts), loading the state dicts of
  akamaster/pytorch_resnet_cifar10 with ``strict=True``.
* ``robustbench:<name>`` -- a RobustBench model zoo entry, cached under ``model.model_dir``.
* ``module:Class`` or ``path/to/file.py:Class`` -- any ``nn.Module`` (or factory), with
  ``model.kwargs`` and a checkpoint in ``model.weights``.

Normalization lives in :class:`Normalized`, so attacks and defenses all work in pixel space.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.io import load_tensors
from landscape.plugins import import_object

CIFAR_RESNET_WEIGHTS = {
    "resnet20": "resnet20-12fca82f.th",
    "resnet32": "resnet32-d509ac18.th",
    "resnet44": "resnet44-014dd654.th",
    "resnet56": "resnet56-4bfd9763.th",
}
CIFAR_RESNET_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{file}"
# The akamaster models were trained on inputs normalized with these statistics.
CIFAR_RESNET_MEAN = (0.485, 0.456, 0.406)
CIFAR_RESNET_STD = (0.229, 0.224, 0.225)


#: every ``model`` key a command that builds a classifier understands, with its default
MODEL_DEFAULTS = {
    "name": "resnet20",    # resnet20|32|44|56, robustbench:<name>, module:Class, path/file.py:Class
    "weights": None,       # checkpoint path; resnets fall back to $LANDSCAPE_WEIGHTS, the cache, a download
    "kwargs": {},
    "mean": None,          # input normalization applied inside the model (resnets: their own statistics)
    "std": None,
    "strict": True,
    "model_dir": None,     # robustbench cache (default ~/.cache/landscape/robustbench)
    "threat_model": "Linf",
}


class ModelError(LandscapeError, RuntimeError):
    """A classifier could not be built or its weights could not be found or loaded."""


class Normalized(nn.Module):
    """``model((x - mean) / std)``: puts the normalization inside so inputs stay in [0, 1]."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class _ShortcutA(nn.Module):
    """Option A shortcut: stride-2 subsampling and zero-padding of the new channels."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _ShortcutA(planes // 4) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR-10 (He et al. 2016, section 4.2)."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.in_planes = 16
        self.layer1 = self._stage(16, blocks_per_stage, 1)
        self.layer2 = self._stage(32, blocks_per_stage, 2)
        self.layer3 = self._stage(64, blocks_per_stage, 2)
        self.linear = nn.Linear(64, num_classes)

    def _stage(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ModelError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes)


def extract_state_dict(checkpoint) -> dict:
    """The state dict inside a checkpoint, without a DataParallel ``module.`` prefix."""
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                state = checkpoint[key]
                break
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint holds a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_checkpoint(path: str | os.PathLike) -> dict:
    return load_tensors(path, ModelError)


def load_weights(model: nn.Module, path, strict: bool = True) -> nn.Module:
    state = extract_state_dict(load_checkpoint(path))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise ModelError(f"weights in {path} do not fit {type(model).__name__}: {exc}") from None
    return model


def _cache_dir() -> Path:
    return Path(os.environ.get("LANDSCAPE_CACHE", Path.home() / ".cache" / "landscape"))


def resolve_resnet_weights(name: str, weights: str | None, download: bool = True) -> Path:
    """Explicit path, else ``$LANDSCAPE_WEIGHTS/<file>``, else the cache, else download there."""
    if weights:
        path = Path(os.path.expanduser(str(weights)))
        if not path.is_file():
            raise ModelError(f"model.weights={weights}: file not found")
        return path
    file = CIFAR_RESNET_WEIGHTS[name]
    tried = []
    if os.environ.get("LANDSCAPE_WEIGHTS"):
        path = Path(os.environ["LANDSCAPE_WEIGHTS"]) / file
        if path.is_file():
            return path
        tried.append(str(path))
    cached = _cache_dir() / "weights" / file
    if cached.is_file():
        return cached
    tried.append(str(cached))
    url = CIFAR_RESNET_URL.format(file=file)
    if download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=False)
            return cached
        except Exception as exc:
            reason = f"download from {url} failed ({exc})"
    else:
        reason = "downloading is disabled"
    raise ModelError(
        f"weights for {name} not found (tried {', '.join(tried)}) and {reason}. Place {file} at {cached}, "
        f"set LANDSCAPE_WEIGHTS to the folder holding it, or pass model.weights=PATH "
        f"(on this project's machines: ../shared/weights/{file})."
    )


def _import_object(spec: str) -> Callable:
    return import_object(spec, "model.name", ModelError)


def _robustbench_model(name: str, cfg: dict) -> nn.Module:
    from cifar10.robustbench_compat import import_robustbench

    rb = import_robustbench()
    model_dir = Path(os.path.expanduser(cfg.get("model_dir") or _cache_dir() / "robustbench"))
    threat = cfg.get("threat_model") or "Linf"
    expected = model_dir / "cifar10" / threat / f"{name}.pt"
    try:
        return rb.load_model(model_name=name, model_dir=str(model_dir), dataset="cifar10", threat_model=threat)
    except KeyError:
        raise ModelError(f"robustbench has no CIFAR-10 {threat} model named {name!r}") from None
    except Exception as exc:
        raise ModelError(
            f"robustbench model {name!r} could not be loaded ({type(exc).__name__}: {exc}). Offline, place its "
            f"checkpoint at {expected} (model.model_dir={model_dir}, model.threat_model={threat})."
        ) from None


def build_classifier(cfg: dict, download: bool = True) -> nn.Module:
    """Build the classifier named by ``cfg['name']`` in eval mode, taking [0, 1] inputs."""
    name = str(cfg.get("name") or "")
    mean, std = cfg.get("mean"), cfg.get("std")
    if name in CIFAR_RESNET_WEIGHTS:
        model = cifar_resnet(int(name[len("resnet"):]))
        load_weights(model, resolve_resnet_weights(name, cfg.get("weights"), download), strict=True)
        model = Normalized(model, mean or CIFAR_RESNET_MEAN, std or CIFAR_RESNET_STD)
    elif name.startswith("robustbench:"):
        model = _robustbench_model(name.split(":", 1)[1], cfg)  # robustbench models normalize inside
        if mean is not None or std is not None:
            model = Normalized(model, mean, std)
    elif ":" in name:
        factory = _import_object(name)
        try:
            model = factory(**(cfg.get("kwargs") or {}))
        except TypeError as exc:
            raise ModelError(f"model.name={name!r}: cannot build it with model.kwargs={cfg.get('kwargs')}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model.name={name!r} built a {type(model).__name__}, not a torch.nn.Module")
        if cfg.get("weights"):
            load_weights(model, os.path.expanduser(str(cfg["weights"])), strict=bool(cfg.get("strict", True)))
        if mean is not None or std is not None:
            if mean is None or std is None:
                raise ModelError("give both model.mean and model.std, or neither")
            model = Normalized(model, mean, std)
    else:
        valid = ", ".join(list(CIFAR_RESNET_WEIGHTS) + ["robustbench:<name>", "module:Class", "file.py:Class"])
        raise ModelError(f"unknown model.name {name!r}; valid choices: {valid}")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
