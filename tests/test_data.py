"""Data: the IDX parser, checksums, look-up order, synthetic data, splits and batches."""

import gzip
import os

import numpy as np
import pytest

from accelnet import data
from accelnet.data import BatchIterator, DataError, read_idx, synthetic, validation_split, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_idx_round_trips(tmp_path, dtype, compress):
    a = (np.arange(2 * 3 * 4) % 100).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a, compress=compress)
    back = read_idx(tmp_path / "a.idx")
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, a)


def test_idx_header_is_the_canonical_layout(tmp_path):
    write_idx(tmp_path / "l.gz", np.array([7, 2, 1], np.uint8))
    raw = gzip.open(tmp_path / "l.gz").read()
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])  # magic 2049, N=3, then the labels


def test_truncated_idx_is_named(tmp_path):
    write_idx(tmp_path / "x.idx", np.zeros((10, 4, 4), np.uint8), compress=False)
    raw = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "x.idx").write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"x.idx: IDX header says \(10, 4, 4\).*truncated"):
        read_idx(tmp_path / "x.idx")


def test_cut_gzip_stream_is_named(tmp_path):
    write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    raw = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="x.gz: cannot read"):
        read_idx(tmp_path / "x.gz")


def test_not_an_idx_file_is_named(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "x.gz")


def _fake_dataset(folder, name="mnist", n_train=12, n_test=6):
    """Small IDX files under the canonical names, and their checksums patched into DATASETS."""
    r = np.random.default_rng(0)
    d = folder / name
    d.mkdir(parents=True)
    arrays = {"train_images": r.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": r.integers(0, 10, n_train).astype(np.uint8),
              "test_images": r.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": r.integers(0, 10, n_test).astype(np.uint8)}
    files = {}
    for key, spec in data.DATASETS[name]["files"].items():
        write_idx(d / spec.name, arrays[key])
        files[key] = data._File(spec.name, data._sha256(d / spec.name), (d / spec.name).stat().st_size)
    return arrays, files


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    arrays, files = _fake_dataset(tmp_path)
    monkeypatch.setitem(data.DATASETS, "mnist", {**data.DATASETS["mnist"], "files": files})
    monkeypatch.delenv("ACCELNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path, arrays


def test_loader_parses_normalizes_and_shapes(fake_mnist):
    folder, arrays = fake_mnist
    d = data.load_mnist(data_dir=folder, download=False)
    assert d.x_train.shape == (12, 784) and d.x_train.dtype == np.float32
    np.testing.assert_allclose(d.x_train[0] * 255, arrays["train_images"][0].ravel(), rtol=1e-6)
    np.testing.assert_array_equal(d.t_test, arrays["test_labels"])
    img = data.load_mnist(data_dir=folder, download=False, flatten=False, one_hot=True)
    assert img.x_train.shape == (12, 1, 28, 28) and img.t_train.shape == (12, 10)
    assert 0.0 <= img.x_train.min() and img.x_train.max() <= 1.0


def test_acccelnet_data_env_is_searched(fake_mnist, monkeypatch):
    folder, _ = fake_mnist
    monkeypatch.setenv("ACCELNET_DATA", str(folder))
    assert data.load_mnist(download=False).x_train.shape == (12, 784)


def test_missing_files_offline_say_where_to_put_them(fake_mnist, tmp_path):
    with pytest.raises(DataError, match=r"mnist not found\. Put its four files .* in one of: .*empty"):
        data.load_mnist(data_dir=tmp_path / "empty", download=False)


def test_corrupted_file_is_detected_by_checksum_and_named(fake_mnist):
    folder, _ = fake_mnist
    f = folder / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: SHA-256 .* corrupted"):
        data.load_mnist(data_dir=folder, download=False)


def test_truncated_file_is_detected_by_size_and_named(fake_mnist):
    folder, _ = fake_mnist
    f = folder / "mnist" / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: 100 bytes, expected .* truncated"):
        data.load_mnist(data_dir=folder, download=False)


def test_download_goes_to_the_cache_verified_and_atomically(fake_mnist, monkeypatch, tmp_path):
    """A mirror serving the files (a local folder through file:// URLs) fills the cache."""
    folder, _ = fake_mnist
    monkeypatch.setitem(data.DATASETS, "mnist",
                        {**data.DATASETS["mnist"], "mirrors": [(folder / "mnist").as_uri() + "/"]})
    d = data.load_mnist(data_dir=tmp_path / "elsewhere", progress=False)
    assert d.x_train.shape == (12, 784)
    cached = sorted(os.listdir(tmp_path / "cache" / "accelnet" / "mnist"))
    assert cached == sorted(f.name for f in data.DATASETS["mnist"]["files"].values())  # no .part left


def test_real_mnist_matches_its_published_counts(data_dir):
    d = data.load_mnist(data_dir=data_dir, download=False)
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert np.bincount(d.t_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist_has_1000_test_samples_per_class(data_dir):
    d = data.load_mnist("fashion-mnist", data_dir=data_dir, download=False)
    assert np.bincount(d.t_test).tolist() == [1000] * 10


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load_mnist("cifar")


def test_synthetic_is_seeded_and_shaped():
    a, b, c = synthetic(50, 10, seed=1), synthetic(50, 10, seed=1), synthetic(50, 10, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (50, 1, 28, 28) and a.x_train.dtype == np.float32 and a.t_train.dtype == np.int64


def test_validation_split_is_disjoint_and_seeded():
    x, t = np.arange(100).reshape(100, 1), np.arange(100)
    xt, tt, xv, tv = validation_split(x, t, 0.2, seed=0)
    assert len(xv) == 20 and len(xt) == 80
    assert set(tt) | set(tv) == set(range(100)) and not set(tt) & set(tv)
    np.testing.assert_array_equal(xv[:, 0], tv)
    np.testing.assert_array_equal(validation_split(x, t, 0.2, seed=0)[3], tv)


def test_batches_cover_every_sample_once_per_epoch_with_a_partial_last_batch():
    x, t = np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10)
    it = BatchIterator(x, t, 4, seed=0)
    batches = list(it)
    assert [len(b[1]) for b in batches] == [4, 4, 2] and len(it) == 3
    assert sorted(np.concatenate([b[1] for b in batches]).tolist()) == list(range(10))


def test_batches_are_reshuffled_each_epoch_and_reproducible():
    x, t = np.zeros((20, 1), np.float32), np.arange(20)
    a, b = BatchIterator(x, t, 5, seed=3), BatchIterator(x, t, 5, seed=3)
    e1, e2 = [bt.tolist() for _, bt in a], [bt.tolist() for _, bt in a]
    assert e1 != e2
    assert [bt.tolist() for _, bt in b] == e1


def test_drop_last_drops_the_partial_batch():
    it = BatchIterator(np.zeros((10, 1), np.float32), np.arange(10), 4, drop_last=True)
    assert [len(bt) for _, bt in it] == [4, 4]
