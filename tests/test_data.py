"""cifar10.data: the three CIFAR-10 formats, subset selection, and the errors when data is missing."""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
from _util import LOSSLESS_NPZ
from PIL import Image

from cifar10.data import (
    CLASSES,
    DataError,
    ImageSet,
    load_cifar10,
    read_indices,
    resolve_root,
    select_indices,
    select_subset,
)

PER_CLASS = 3


def _uint8_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _expected(u8: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float CHW in [0, 1], exactly value / 255."""
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0


# ----------------------------------------------------------------------------- ImageFolder

def _write_imagefolder(root, split="test", per_class=PER_CLASS, seed=0, classes=CLASSES):
    u8 = _uint8_images(per_class * len(classes), seed)
    for c, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(u8[c * per_class + i]).save(folder / f"{i:04d}.png")
    return u8


def test_imagefolder_pixels_and_labels(tmp_path):
    u8 = _write_imagefolder(tmp_path)
    (tmp_path / "test" / "cat" / "notes.txt").write_text("not an image")   # ignored
    data = load_cifar10(tmp_path, "test", download=False)
    assert isinstance(data, ImageSet)
    assert len(data) == 10 * PER_CLASS
    assert data.images.dtype == torch.float32 and data.images.shape == (10 * PER_CLASS, 3, 32, 32)
    assert torch.equal(data.images, _expected(u8))                 # exactly uint8 / 255
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert data.labels.tolist() == [c for c in range(10) for _ in range(PER_CLASS)]  # standard class order
    assert data.source.startswith("imagefolder:")
    assert data.indices.tolist() == list(range(len(data)))


def test_imagefolder_split_selects_folder(tmp_path):
    test_u8 = _write_imagefolder(tmp_path, "test", per_class=1, seed=1)
    train_u8 = _write_imagefolder(tmp_path, "train", per_class=2, seed=2)
    assert torch.equal(load_cifar10(tmp_path, "train", download=False).images, _expected(train_u8))
    assert torch.equal(load_cifar10(tmp_path, "test", download=False).images, _expected(test_u8))


def test_imagefolder_missing_class_folder(tmp_path):
    _write_imagefolder(tmp_path, classes=CLASSES[:9])
    with pytest.raises(DataError, match="truck"):
        load_cifar10(tmp_path, "test", download=False)


def test_imagefolder_wrong_image_size(tmp_path):
    _write_imagefolder(tmp_path, per_class=1)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "test" / "dog" / "9999.png")
    with pytest.raises(DataError, match="9999.png"):
        load_cifar10(tmp_path, "test", download=False)


def test_bad_split_name(tmp_path):
    with pytest.raises(DataError, match="split"):
        load_cifar10(tmp_path, "valid", download=False)


# ----------------------------------------------------------------------------- torchvision's format

def _write_torchvision(root, n_per_batch=4, seed=0):
    """Write cifar-10-batches-py as torchvision reads it: pickled dicts with 'data' (N, 3072) uint8 in
    CHW order (1024 red, 1024 green, 1024 blue) and 'labels', plus batches.meta with 'label_names'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        entry = {"batch_label": name, "data": data, "labels": labels,
                 "filenames": [f"{name}_{i}.png" for i in range(n_per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": n_per_batch, "num_vis": 3072}, f)
    return folder, batches


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def accept_written_batches(monkeypatch):
    """torchvision.datasets.CIFAR10 checks the md5 of all six batch files and batches.meta against the
    official archive's on *every* load (CIFAR10.__init__ -> _check_integrity, _load_meta), not only when
    downloading, so hand-written batches are refused. This is the one place the tests patch something:
    the expected md5 lists are replaced by the md5s of the files the test wrote, so torchvision's
    integrity check itself still runs."""
    import torchvision.datasets as tvd

    def accept(folder):
        monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")]
                                                        for i in range(1, 6)])
        monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
        monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": _md5(folder / "batches.meta")})

    return accept


def test_torchvision_format(tmp_path, accept_written_batches):
    folder, batches = _write_torchvision(tmp_path)
    accept_written_batches(folder)
    test = load_cifar10(tmp_path, "test", download=False)
    data, labels = batches["test_batch"]
    assert torch.equal(test.images, torch.from_numpy(data).view(-1, 3, 32, 32).float() / 255)
    assert test.labels.tolist() == labels
    assert test.source.startswith("torchvision:")
    # a known pixel: image 1, green channel (plane 1), row 2, column 3
    assert round(test.images[1, 1, 2, 3].item() * 255) == data[1, 1024 + 2 * 32 + 3]
    train = load_cifar10(tmp_path, "train", download=False)
    assert len(train) == 5 * 4
    assert train.labels.tolist() == [v for i in range(1, 6) for v in batches[f"data_batch_{i}"][1]]
    expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(train.images, torch.from_numpy(expected).view(-1, 3, 32, 32).float() / 255)


def test_torchvision_corrupted_files_give_data_error(tmp_path):
    # Without the patched md5 lists torchvision refuses the hand-written files; the loader must say where.
    _write_torchvision(tmp_path)
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path, "test", download=False)
    assert str(tmp_path.resolve()) in str(exc.value)


# ----------------------------------------------------------------------------- .npz

def test_npz_file(tmp_path):
    u8 = _uint8_images(7, 3)
    labels = np.array([9, 0, 1, 2, 3, 4, 5])
    path = tmp_path / "cifar_test.npz"
    np.savez(path, images=u8, labels=labels, indices=np.arange(100, 107))
    data = load_cifar10(path, "test", download=False)
    assert torch.equal(data.images, _expected(u8))
    assert data.labels.dtype == torch.long and data.labels.tolist() == labels.tolist()
    assert data.indices.tolist() == list(range(100, 107))       # 'indices' is used when present
    assert data.source == f"npz:{path}"


def test_npz_folder_picks_split_file(tmp_path):
    train_u8, test_u8 = _uint8_images(3, 4), _uint8_images(2, 5)
    np.savez(tmp_path / "cifar10_train.npz", images=train_u8, labels=np.zeros(3, int))
    np.savez(tmp_path / "cifar10_test.npz", images=test_u8, labels=np.ones(2, int))
    assert torch.equal(load_cifar10(tmp_path, "test", download=False).images, _expected(test_u8))
    assert torch.equal(load_cifar10(tmp_path, "train", download=False).images, _expected(train_u8))
    assert load_cifar10(tmp_path, "test", download=False).indices.tolist() == [0, 1]


@pytest.mark.parametrize("arrays, match", [
    ({"images": np.zeros((2, 32, 32, 3), np.uint8)}, "labels"),
    ({"images": np.zeros((2, 32, 32, 3), np.float32), "labels": np.zeros(2, int)}, "uint8"),
    ({"images": np.zeros((2, 3, 32, 32), np.uint8), "labels": np.zeros(2, int)}, r"\(N,32,32,3\)"),
    ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.zeros(3, int)}, "labels"),
    ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.array([0, 10])}, "0..9"),
])
def test_npz_malformed(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match):
        load_cifar10(path, "test", download=False)


# ----------------------------------------------------------------------------- subsets

def _toy(n=50) -> ImageSet:
    return ImageSet(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32),
                    torch.arange(n) % 10, torch.arange(n) + 1000, "toy")


def test_subset_random_is_deterministic_by_seed():
    data = _toy()
    a, b = select_subset(data, 10, seed=0), select_subset(data, 10, seed=0)
    c = select_subset(data, 10, seed=1)
    assert len(a) == 10
    assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert not torch.equal(a.indices, c.indices)
    assert a.indices.tolist() == sorted(a.indices.tolist())        # kept in index order
    assert len(set(a.indices.tolist())) == 10                       # without replacement
    # images, labels and indices stay aligned
    pos = a.indices - 1000
    assert torch.equal(a.labels, data.labels[pos]) and torch.equal(a.images, data.images[pos])
    assert a.source == "toy"


def test_subset_first_and_whole():
    data = _toy()
    first = select_subset(data, 5, seed=123, selection="first")
    assert first.indices.tolist() == [1000, 1001, 1002, 1003, 1004]
    for n in (None, 0, 50, 80):
        assert len(select_subset(data, n)) == 50


def test_subset_errors():
    with pytest.raises(DataError, match="positive"):
        select_subset(_toy(), -3)
    with pytest.raises(DataError, match="selection"):
        select_subset(_toy(), 5, selection="shuffle")


def test_indices_pick_those_source_images_from_a_list_or_a_file(tmp_path):
    data = _toy()
    chosen = select_indices(data, read_indices([1042, 1003, 1017]))
    assert chosen.indices.tolist() == [1003, 1017, 1042]                  # index order, whatever the list's
    assert torch.equal(chosen.images, data.images[[3, 17, 42]]) and torch.equal(chosen.labels, data.labels[[3, 17, 42]])
    survivors = tmp_path / "s.csv"                                        # what landscape worst-case --survivors writes
    survivors.write_text("index\n1017\n1003\n")
    assert select_indices(data, read_indices(str(survivors))).indices.tolist() == [1003, 1017]
    plain = tmp_path / "s.txt"
    plain.write_text("1005\n\n1001\n")
    assert read_indices(plain) == [1001, 1005]


def test_indices_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not in toy"):
        select_indices(_toy(), [1003, 5000])
    with pytest.raises(DataError, match="more than once"):
        read_indices([1, 2, 1])
    with pytest.raises(DataError, match="empty"):
        read_indices([])
    with pytest.raises(DataError, match=">= 0"):
        read_indices([3, -1])
    with pytest.raises(DataError, match="no file"):
        read_indices(str(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("index\nseven\n")
    with pytest.raises(DataError, match="one whole number per line"):
        read_indices(bad)


# ----------------------------------------------------------------------------- where the data is

def test_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(DataError) as exc:
        load_cifar10(missing, "test", download=False)
    msg = str(exc.value)
    assert str(missing.resolve()) in msg
    assert "does not exist" in msg and "data.root" in msg and "LANDSCAPE_DATA" in msg
    assert not missing.exists()          # a failed load creates nothing


def test_empty_root_without_download(tmp_path):
    with pytest.raises(DataError, match="nothing recognisable"):
        load_cifar10(tmp_path, "test", download=False)


def test_landscape_data_env_used_when_root_is_none(tmp_path, monkeypatch):
    u8 = _uint8_images(4, 6)
    path = tmp_path / "env.npz"
    np.savez(path, images=u8, labels=np.arange(4))
    monkeypatch.setenv("LANDSCAPE_DATA", str(path))
    assert resolve_root(None) == path and resolve_root("") == path
    assert torch.equal(load_cifar10(None, "test", download=False).images, _expected(u8))
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"   # an explicit root wins


def test_default_root_is_data_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as exc:
        load_cifar10(None, "test", download=False)
    assert str(tmp_path.resolve() / "data") in str(exc.value)


# ----------------------------------------------------------------------------- the shared copy

def test_shared_lossless_npz(shared):
    data = load_cifar10(shared(LOSSLESS_NPZ), "test", download=False)
    assert len(data) == 1000
    assert data.labels[:5].tolist() == [3, 8, 8, 0, 6]
    assert data.labels[:20].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    assert data.indices.tolist() == list(range(1000))
    # the README's check: image 0's red channel starts 158 159 165 166 160 156 162 159 158
    assert (data.images[0, 0, 0, :9] * 255).round().int().tolist() == [158, 159, 165, 166, 160, 156, 162, 159, 158]
    assert torch.bincount(data.labels, minlength=10).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
