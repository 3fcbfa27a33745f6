"""Datasets: MNIST and Fashion-MNIST from the canonical IDX gzip files, a synthetic set,
a validation split, and the shuffled batch iterator.

Files are looked up in ``data_dir``, then ``$ACCELNET_DATA``, then the user cache
dir (``$XDG_CACHE_HOME/accelnet`` or ``~/.cache/accelnet``); each folder may hold
``mnist/`` and ``fashion-mnist/`` subfolders or the four files directly. Missing
files are downloaded (with a progress bar) into the cache dir; every file is
checked against its SHA-256 before it is parsed.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import Backend, get_backend

__all__ = ["DataError", "Dataset", "DATASETS", "load", "load_mnist", "synthetic", "read_idx", "write_idx",
           "validation_split", "BatchIterator", "search_dirs", "cache_dir", "class_names"]


class DataError(RuntimeError):
    """A dataset file is missing, corrupted or not what it claims to be."""


@dataclass(frozen=True)
class _File:
    name: str
    sha256: str
    size: int


# The canonical files (the hashes torchvision's MD5s stand for; see ../shared/data/README.md).
DATASETS = {
    "mnist": {
        "files": {
            "train_images": _File("train-images-idx3-ubyte.gz",
                                  "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            "train_labels": _File("train-labels-idx1-ubyte.gz",
                                  "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            "test_images": _File("t10k-images-idx3-ubyte.gz",
                                 "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            "test_labels": _File("t10k-labels-idx1-ubyte.gz",
                                 "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        },
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    },
    "fashion-mnist": {
        "files": {
            "train_images": _File("train-images-idx3-ubyte.gz",
                                  "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            "train_labels": _File("train-labels-idx1-ubyte.gz",
                                  "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            "test_images": _File("t10k-images-idx3-ubyte.gz",
                                 "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            "test_labels": _File("t10k-labels-idx1-ubyte.gz",
                                 "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        },
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"),
    },
}


def class_names(dataset: str) -> tuple:
    """The names of ``dataset``'s classes, by index (digits for MNIST)."""
    return DATASETS.get(dataset, {}).get("classes") or tuple(str(i) for i in range(10))


@dataclass
class Dataset:
    """Train and test arrays on the host: images float32 in [0, 1], labels int64 indices (or one-hot)."""

    name: str
    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray

    def __post_init__(self):
        """Refuse, with the sample named, what training would only trip over later: counts that differ,
        an empty split, samples of two shapes, non-float or non-finite images, labels out of range."""
        for split in ("train", "test"):
            x, t = getattr(self, f"x_{split}"), getattr(self, f"t_{split}")
            if not hasattr(x, "shape") or not hasattr(t, "shape") or x.ndim < 2:
                raise ValueError(f"Dataset {self.name!r}: x_{split} and t_{split} must be arrays, x_{split} with "
                                 f"one row per sample")
            if len(x) != len(t):
                raise ValueError(f"Dataset {self.name!r}: x_{split} has {len(x)} samples but t_{split} has {len(t)}")
            if len(x) == 0:
                raise ValueError(f"Dataset {self.name!r}: the {split} set is empty")
            if x.dtype.kind != "f":
                raise ValueError(f"Dataset {self.name!r}: x_{split} must hold floats (images scaled to [0, 1]), "
                                 f"got {x.dtype}")
            finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if not finite.all():
                raise ValueError(f"Dataset {self.name!r}: x_{split} holds NaN or inf, first in sample "
                                 f"{int(np.argmin(finite))}: clean or drop those samples")
            if t.ndim == 1 and t.dtype.kind in "iu":
                if int(t.min()) < 0:
                    raise ValueError(f"Dataset {self.name!r}: t_{split} holds a negative class index in sample "
                                     f"{int(np.argmin(t))}")
            elif t.ndim != 2:
                raise ValueError(f"Dataset {self.name!r}: t_{split} must be class indices (N,) of an integer dtype "
                                 f"or one-hot (N, classes), got shape {t.shape} dtype {t.dtype}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"Dataset {self.name!r}: train samples have shape {self.x_train.shape[1:]} but test "
                             f"samples {self.x_test.shape[1:]}")

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        t = self.t_train
        return int(t.shape[1]) if t.ndim == 2 else int(t.max()) + 1

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"classes={self.num_classes})")


# -- IDX ---------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (gzip or raw): magic 0 0 <dtype> <ndim>, big-endian uint32 dims, data."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # a cut or damaged gzip stream
        raise DataError(f"{path}: cannot read ({exc}); the file is truncated or corrupted, delete it") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: absurd dims cannot overflow into a match
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes of data) but the file holds "
                        f"{len(raw) - header}: truncated or corrupted")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """Write ``array`` as IDX (gzip-compressed by default): the inverse of :func:`read_idx`."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder(">") if np.dtype(v).itemsize > 1 else np.dtype(v): k
             for k, v in _IDX_DTYPES.items()}
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in codes:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}")
    payload = bytes([0, 0, codes[big], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload += array.astype(big).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


# -- finding, checking and downloading files --------------------------------------------------------

def cache_dir() -> Path:
    """The user cache dir where downloads go."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "accelnet"


def search_dirs(data_dir=None) -> list[Path]:
    """Where files are looked for, in order: ``data_dir``, ``$ACCELNET_DATA``, the cache dir."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("ACCELNET_DATA"):
        dirs.append(Path(os.environ["ACCELNET_DATA"]))
    dirs.append(cache_dir())
    return dirs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, spec: _File) -> None:
    size = path.stat().st_size
    if size != spec.size:
        raise DataError(f"{path}: {size} bytes, expected {spec.size}: the file is truncated or not the canonical "
                        f"{spec.name}; delete it (it will be downloaded again) or replace it")
    digest = _sha256(path)
    if digest != spec.sha256:
        raise DataError(f"{path}: SHA-256 {digest[:16]}... does not match the canonical {spec.name} "
                        f"({spec.sha256[:16]}...): the file is corrupted; delete it or replace it")


def _locate(name: str, spec: _File, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / name / spec.name, d / spec.name):
            if candidate.is_file():
                return candidate
    return None


def _download(name: str, spec: _File, dest: Path, progress: bool) -> Path:
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in DATASETS[name]["mirrors"]:
        url = mirror + spec.name
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{spec.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
                total = int(resp.headers.get("Content-Length") or spec.size)
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}/{spec.name}",
                          disable=not progress, leave=False) as bar:
                    for block in iter(lambda: resp.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
            _verify(Path(tmp), spec)
            os.replace(tmp, dest)  # only a complete, verified file ever has the real name
            return dest
        except (OSError, DataError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(f"could not download {spec.name} ({'; '.join(errors)})")


def _fetch(name: str, key: str, data_dir, download: bool, progress: bool) -> Path:
    spec = DATASETS[name]["files"][key]
    dirs = search_dirs(data_dir)
    path = _locate(name, spec, dirs)
    if path is None:
        if not download:
            raise DataError(_missing_message(name, dirs))
        try:
            path = _download(name, spec, cache_dir() / name / spec.name, progress)
        except DataError as exc:
            raise DataError(f"{_missing_message(name, dirs)} Downloading failed: {exc}") from None
    _verify(path, spec)
    return path


def _missing_message(name: str, dirs: list[Path]) -> str:
    files = ", ".join(f.name for f in DATASETS[name]["files"].values())
    where = ", ".join(str(d / name) for d in dirs)
    return (f"{name} not found. Put its four files ({files}) in one of: {where} "
            f"(or pass --data-dir / set ACCELNET_DATA to a folder holding {name}/).")


# -- loading ----------------------------------------------------------------------------------------

def _one_hot(t: np.ndarray, classes: int) -> np.ndarray:
    out = np.zeros((t.size, classes), np.float32)
    out[np.arange(t.size), t] = 1
    return out


def load_mnist(name: str = "mnist", data_dir=None, flatten: bool = True, normalize: bool = True,
               one_hot: bool = False, download: bool = True, progress: bool = True) -> Dataset:
    """MNIST or Fashion-MNIST: images (N, 784) or (N, 1, 28, 28), in [0, 1] when ``normalize``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)} or 'synthetic'")
    arrays = {key: read_idx(_fetch(name, key, data_dir, download, progress)) for key in DATASETS[name]["files"]}
    for split in ("train", "test"):
        x, t = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or t.ndim != 1 or len(x) != len(t):
            raise DataError(f"{name}: {split} images {x.shape} and labels {t.shape} do not pair up")
        if t.size and t.max() > 9:
            raise DataError(f"{name}: {split} labels go up to {t.max()}, expected 0-9")

    def images(x):
        x = x.astype(np.float32)
        if normalize:
            x /= 255.0
        return x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, *x.shape[1:])

    def labels(t):
        t = t.astype(np.int64)
        return _one_hot(t, 10) if one_hot else t

    return Dataset(name, images(arrays["train_images"]), labels(arrays["train_labels"]),
                   images(arrays["test_images"]), labels(arrays["test_labels"]))


def synthetic(n_train: int = 6000, n_test: int = 1000, input_shape=(1, 28, 28), classes: int = 10,
              noise: float = 0.6, seed: int = 0, flatten: bool = False, one_hot: bool = False) -> Dataset:
    """A learnable dataset of any size: each class is a binary template, each sample its template
    plus Gaussian noise, clipped to [0, 1]. Same seed, same data."""
    if n_train < 1 or n_test < 1 or classes < 2:
        raise ValueError("synthetic needs n_train >= 1, n_test >= 1 and classes >= 2")
    rng = np.random.default_rng(seed)
    shape = tuple(input_shape)
    # A shared random "stroke" image; each class flips its own ~3% of the pixels, so classes are
    # separable but not at a glance (a linear model needs a few epochs, as on MNIST).
    base = rng.random(shape) < 0.3
    templates = (base ^ (rng.random((classes, *shape)) < 0.03)).astype(np.float32)

    def draw(n):
        t = rng.integers(0, classes, n)
        x = np.clip(templates[t] + noise * rng.standard_normal((n, *shape)).astype(np.float32), 0, 1)
        x = x.reshape(n, -1) if flatten else x
        return x.astype(np.float32), (_one_hot(t, classes) if one_hot else t.astype(np.int64))

    x_train, t_train = draw(n_train)
    x_test, t_test = draw(n_test)
    return Dataset("synthetic", x_train, t_train, x_test, t_test)


def load(name: str, data_dir=None, flatten: bool = True, one_hot: bool = False, seed: int = 0,
         download: bool = True, progress: bool = True) -> Dataset:
    """``"mnist"``, ``"fashion-mnist"`` or ``"synthetic"`` (MNIST-shaped, seeded)."""
    if name == "synthetic":
        return synthetic(input_shape=(784,) if flatten else (1, 28, 28), seed=seed, one_hot=one_hot)
    return load_mnist(name, data_dir, flatten=flatten, one_hot=one_hot, download=download, progress=progress)


def validation_split(x: np.ndarray, t: np.ndarray, fraction: float = 0.2, seed: int = 0):
    """Shuffle with ``seed`` and hold out ``fraction`` for validation (the book's chapter 6.5):
    returns (x_train, t_train, x_val, t_val)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * fraction)))
    val, train = order[:n_val], order[n_val:]
    return x[train], t[train], x[val], t[val]


class BatchIterator:
    """Mini-batches of (x, t) on the backend's device, reshuffled every epoch by a seeded host RNG.

    The last partial batch is kept unless ``drop_last``. :meth:`state` (the RNG state the epoch in
    progress drew its order from, and how many of its batches were served) is part of a checkpoint,
    so a run resumed mid-epoch sees the same remaining batches, in the same order, as an
    uninterrupted one.

    Data-parallel (``world`` ranks): ``batch_size`` is the global batch; every rank draws the same
    order and yields its contiguous shard of each global batch (shard sizes differ by at most one
    sample, in a last partial batch; one with fewer samples than ranks is dropped).
    ``batch_samples`` is the size of the global batch whose shard was yielded last.
    """

    def __init__(self, x: np.ndarray, t: np.ndarray, batch_size: int, backend: str | Backend = "cpu",
                 dtype=np.float32, shuffle: bool = True, seed: int | None = 0, drop_last: bool = False,
                 rank: int = 0, world: int = 1):
        if len(x) != len(t):
            raise ValueError(f"x has {len(x)} samples but t has {len(t)}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(x) == 0:
            raise ValueError("the dataset is empty")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank!r} is not in a world of {world!r} ranks")
        if batch_size % world:
            raise ValueError(f"the global batch size {batch_size} does not split evenly over {world} ranks: "
                             f"use a multiple of {world} (e.g. {batch_size - batch_size % world or world})")
        self.x, self.t = x, t
        self.rank, self.world = int(rank), int(world)
        self.batch_samples = 0
        self.batch_size = int(batch_size)
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rng = np.random.default_rng(seed)
        self.position = 0  # batches of the epoch in progress already served
        self._epoch_rng = None  # the RNG state that epoch drew its order from

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        last = n % b
        return n // b if self.drop_last or last < self.world else n // b + 1

    def state(self) -> dict:
        """Where the batch order stands: ``{"rng": ..., "position": ...}`` (JSON-able)."""
        if 0 < self.position < len(self):
            return {"rng": self._epoch_rng, "position": self.position}
        return {"rng": self.rng.bit_generator.state, "position": 0}

    def check_state(self, state: dict) -> None:
        """Raise ValueError, changing nothing, unless :meth:`set_state` can take ``state``."""
        position = state.get("position", 0)
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(self):
            raise ValueError(f"the batch position {position!r} is not a batch of this epoch (0..{len(self) - 1}): "
                             f"it was saved with another batch size or dataset")

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`state`: the next iteration redraws that epoch's order and skips the
        batches already served."""
        self.check_state(state)
        position = state.get("position", 0)
        self.rng.bit_generator.state = state["rng"]
        self._epoch_rng = self.rng.bit_generator.state
        self.position = position

    def __iter__(self):
        n = len(self.x)
        if 0 < self.position < len(self):  # an epoch stopped part-way: redraw its order, skip what was served
            self.rng.bit_generator.state = self._epoch_rng
        else:
            self.position = 0
        self._epoch_rng = self.rng.bit_generator.state
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for i in range(self.position, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            self.batch_samples = len(idx)
            if self.world > 1:
                idx = np.array_split(idx, self.world)[self.rank]
            batch = self.backend.to_device(self.x[idx], self.dtype), self.backend.to_device(self.t[idx])
            self.position = i + 1  # the consumer has this batch: a stop after it resumes at the next
            yield batch
        self.position = 0
