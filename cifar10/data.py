"""CIFAR-10 from torchvision's format, an ImageFolder tree, or a ``.npz`` of uint8 images.

Every source gives float images in [0, 1] (N, 3, 32, 32) and labels in the standard class
order. The root comes from the config key ``data.root`` or the ``LANDSCAPE_DATA``
environment variable; when neither names existing data and downloading is not possible,
the error says which path was tried and what to put there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape.errors import LandscapeError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_ROOT = "data"


class DataError(LandscapeError, RuntimeError):
    """The data set is missing or malformed; the message says what to place where."""


@dataclass
class ImageSet:
    """Images in [0, 1], labels, each image's index in the source split, and the source's name."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, positions: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[positions], self.labels[positions], self.indices[positions], self.source)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Config value, else ``$LANDSCAPE_DATA``, else ``./data``."""
    if root in (None, ""):
        root = os.environ.get("LANDSCAPE_DATA") or DEFAULT_ROOT
    return Path(os.path.expanduser(str(root)))


def _detect_format(root: Path, split: str) -> str | None:
    if root.is_file() and root.suffix == ".npz":
        return "npz"
    if (root / "cifar-10-batches-py").is_dir():
        return "torchvision"
    if (root / split).is_dir() and any((root / split / c).is_dir() for c in CLASSES):
        return "imagefolder"
    if root.is_dir() and list(root.glob("*.npz")):
        return "npz"
    return None


def _missing_error(root: Path, split: str, reason: str) -> DataError:
    return DataError(
        f"CIFAR-10 {split} split not found at {root.resolve()} ({reason}). Put one of these there: "
        f"torchvision's 'cifar-10-batches-py/' folder (from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), "
        f"an ImageFolder tree '{split}/<class>/<image>.jpg' with the class folders {', '.join(CLASSES)}, "
        f"or a .npz with 'images' (N,32,32,3) uint8 and 'labels'. Set it with data.root=PATH or LANDSCAPE_DATA=PATH "
        f"(on this project's machines: ../shared/data/cifar10-jpeg)."
    )


def _load_imagefolder(root: Path, split: str) -> ImageSet:
    from PIL import Image

    folder = root / split
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataError(f"class folder {class_dir} is missing: an ImageFolder tree needs all of {', '.join(CLASSES)}")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            try:
                with Image.open(path) as img:
                    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
            except OSError as exc:
                raise DataError(f"cannot read image {path}: {exc}") from None
            if arr.shape != (32, 32, 3):
                raise DataError(f"image {path} has shape {arr.shape}, expected 32x32 RGB")
            images.append(arr)
            labels.append(label)
    if not images:
        raise DataError(f"no images found under {folder}")
    return _from_uint8(np.stack(images), np.asarray(labels), f"imagefolder:{folder}")


def _load_npz(root: Path, split: str) -> ImageSet:
    path = root
    if root.is_dir():
        candidates = sorted(root.glob("*.npz"))
        matching = [p for p in candidates if split in p.name] or candidates
        path = matching[0]
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data or "labels" not in data:
            raise DataError(f"{path} must hold arrays 'images' (N,32,32,3) uint8 and 'labels'; it holds {list(data.keys())}")
        images, labels = data["images"], data["labels"]
        indices = data["indices"] if "indices" in data else None
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise DataError(f"{path}: 'images' must be (N,32,32,3) uint8, got {images.shape} {images.dtype}")
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return _from_uint8(images, labels, f"npz:{path}", indices)


def _load_torchvision(root: Path, split: str, download: bool) -> ImageSet:
    import torchvision

    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=download)
    except Exception as exc:  # torchvision raises RuntimeError/URLError when offline or corrupted
        raise _missing_error(root, split, f"torchvision could not load or download it: {exc}") from None
    return _from_uint8(np.asarray(ds.data), np.asarray(ds.targets), f"torchvision:{root}")


def _from_uint8(images: np.ndarray, labels: np.ndarray, source: str, indices=None) -> ImageSet:
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{source}: labels must lie in 0..9")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    idx = torch.arange(len(labels)) if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.long)
    return ImageSet(x.contiguous(), labels, idx, source)


def load_cifar10(root=None, split: str = "test", download: bool = True) -> ImageSet:
    """Load a whole CIFAR-10 split from whichever format ``root`` holds."""
    if split not in ("train", "test"):
        raise DataError(f"data.split must be 'train' or 'test', got {split!r}")
    root = resolve_root(root)
    fmt = _detect_format(root, split)
    if fmt == "imagefolder":
        return _load_imagefolder(root, split)
    if fmt == "npz":
        return _load_npz(root, split)
    if fmt == "torchvision" or download:
        if fmt is None and not download:
            raise _missing_error(root, split, "nothing recognisable there")
        return _load_torchvision(root, split, download)
    reason = "path does not exist" if not root.exists() else "nothing recognisable there"
    raise _missing_error(root, split, reason + ", and data.download is false")


def train_and_heldout(d: dict, seed: int) -> tuple[ImageSet, ImageSet]:
    """A task's ``data`` section -> (``n_train`` training images, ``n_heldout`` test images), both drawn by
    ``seed``; the held-out order is shuffled by seed too, so any first n of them cover all classes."""
    train = select_subset(load_cifar10(d["root"], "train", bool(d["download"])), d["n_train"], seed)
    test = select_subset(load_cifar10(d["root"], "test", bool(d["download"])), d["n_heldout"], seed)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(int(seed)))
    return train, test.subset(order)


def read_indices(spec) -> list[int]:
    """``data.indices``: a list of source indices, or a file of them (a CSV with an ``index`` column,
    e.g. what ``landscape worst-case --survivors`` writes, or one index per line)."""
    if isinstance(spec, (str, os.PathLike)):
        path = Path(os.path.expanduser(str(spec)))
        if not path.is_file():
            raise DataError(f"data.indices: no file {path}")
        lines = [s.strip() for s in path.read_text().splitlines() if s.strip()]
        if lines and lines[0] == "index":
            lines = lines[1:]
        try:
            values = [int(s.split(",")[0]) for s in lines]
        except ValueError:
            raise DataError(f"data.indices: {path} must hold one whole number per line (or a CSV whose first "
                            f"column is 'index')") from None
    elif isinstance(spec, (list, tuple)):
        values = list(spec)
    else:
        raise DataError(f"data.indices must be a list of image indices or a file of them, got {spec!r}")
    if not values:
        raise DataError("data.indices is empty: nothing to evaluate")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise DataError(f"data.indices must be whole numbers >= 0, got {[v for v in values if not isinstance(v, int) or v < 0][:5]}")
    if len(set(values)) != len(values):
        raise DataError("data.indices lists an image more than once")
    return sorted(values)


def select_indices(data: ImageSet, indices: list[int]) -> ImageSet:
    """The images whose index in the source split is listed (in index order), e.g. the survivors of a
    cheaper attack, so that a costlier one runs only where it can still change the worst case."""
    pos = {int(i): p for p, i in enumerate(data.indices.tolist())}
    missing = [i for i in indices if i not in pos]
    if missing:
        raise DataError(f"data.indices: {len(missing)} of them are not in {data.source} "
                        f"({len(data)} images), e.g. {missing[:5]}")
    return data.subset(torch.tensor([pos[i] for i in indices], dtype=torch.long))


def select_subset(data: ImageSet, n_examples: int | None, seed: int = 0, selection: str = "random") -> ImageSet:
    """Deterministic subset: ``first`` n images, or n drawn without replacement by ``seed`` (kept in index order)."""
    if n_examples is None or n_examples <= 0 or n_examples >= len(data):
        if n_examples is not None and n_examples < 0:
            raise DataError(f"data.n_examples must be positive, got {n_examples}")
        return data
    if selection == "first":
        pos = torch.arange(n_examples)
    elif selection == "random":
        gen = torch.Generator().manual_seed(int(seed))
        pos = torch.randperm(len(data), generator=gen)[:n_examples].sort().values
    else:
        raise DataError(f"data.selection must be 'random' or 'first', got {selection!r}")
    return data.subset(pos)
