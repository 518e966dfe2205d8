"""Fixtures: the ../shared folder, a hermetic environment, and a tiny trained classifier."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _util import TINYNET_SOURCE, accuracy, import_file, make_synthetic, shared_root, train_tiny

# The tests run tiny models, for which one thread is fastest; with torch's default of one thread
# per core they ran up to 6x slower on a 2-core machine that had any other load.
torch.set_num_threads(1)


@pytest.fixture
def shared():
    """``shared("weights/resnet20-12fca82f.th")`` gives the path under ../shared, or skips the test.

    The root is ``$LANDSCAPE_SHARED``, else ``<repo>/../shared``. Several paths give a list.
    """
    root = shared_root()

    def need(*relpaths: str):
        paths = [root / rel for rel in relpaths]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            pytest.skip(f"../shared is absent: {', '.join(missing)} not found "
                        f"(set LANDSCAPE_SHARED to the folder that holds data/ and weights/)")
        return paths[0] if len(paths) == 1 else paths

    return need


@pytest.fixture(autouse=True)
def one_thread_after_each_test():
    """A run's `threads` setting is process-wide in torch: put the tests' one thread back after each test."""
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch, tmp_path_factory):
    """No test reads the developer's data/weights variables or writes into ~/.cache."""
    monkeypatch.delenv("LANDSCAPE_DATA", raising=False)
    monkeypatch.delenv("LANDSCAPE_WEIGHTS", raising=False)
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A trained TinyNet with its source file and checkpoint, and held-out synthetic data.

    Attributes: ``model``, ``model_file``, ``weights`` (a checkpoint {'state_dict': ...}),
    ``spec`` ('<file>.py:TinyNet'), ``x``, ``y`` (60 held-out images and labels), ``npz`` (those
    images as a .npz with 'images' uint8 (N,32,32,3) and 'labels'), ``clean_acc``.
    """
    folder = tmp_path_factory.mktemp("tiny")
    model_file = folder / "tinynet.py"
    model_file.write_text(TINYNET_SOURCE)
    module = import_file(model_file, "_tests_tinynet")
    x_train, y_train, _ = make_synthetic(60, seed=0)
    torch.manual_seed(0)                  # the initial weights too: the global RNG's state varies by import
    model = train_tiny(module.TinyNet(), x_train, y_train)
    weights = folder / "tinynet.pth"
    torch.save({"state_dict": model.state_dict()}, weights)
    x, y, u8 = make_synthetic(30, seed=1)
    npz = folder / "synthetic_test.npz"
    np.savez(npz, images=u8, labels=y.numpy())
    return SimpleNamespace(model=model, model_file=model_file, weights=weights, spec=f"{model_file}:TinyNet",
                           x=x, y=y, npz=npz, clean_acc=accuracy(model, x, y))
