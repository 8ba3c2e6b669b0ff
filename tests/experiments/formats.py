"""Builders of small data files in the exact formats the loaders read (IDX, CIFAR-10
python pickles, AG News CSV, WordNet data.noun lines)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    """An IDX file: magic 0x0803 (images) / 0x0801 (labels), big-endian dims, uint8 data."""
    magic = 2051 if array.ndim == 3 else 2049
    raw = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx_folder(folder: Path, *, gz: bool = True, n_train: int = 30, n_test: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz=gz
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)
    return folder


def make_cifar_folder(root: Path, *, per_batch: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * per_batch,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def make_agnews_folder(folder: Path, *, per_class: int = 5) -> Path:
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        lines = [
            f'"{c}","Title {c}-{i} of {split}","Some ""quoted"" description, with a comma\\band {i}."'
            for i in range(per_class)
            for c in (1, 2, 3, 4)
        ]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# The licence header of data.noun: lines that start with two spaces (and, as in the real
# file, end with two).
WORDNET_FIXTURE = "".join(
    f"{line}  \n"
    for line in (
        "  1 This software and database is being provided to you, the LICENSEE, by",
        "  2 Princeton University under the following license.",
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived",
    )
)


def make_wordnet_file(path: Path, *, per_class: int = 6) -> Path:
    lines = [WORDNET_FIXTURE]
    offset = 2000
    for lex, word in ((6, "tool"), (18, "writer"), (20, "fern"), (5, "dog"), (9, "idea")):
        for i in range(per_class):
            offset += 1
            lines.append(
                f'{offset:08d} {lex:02d} n 01 {word}{i} 0 000 | a {word} number {i}; "an example"  \n'
            )
    path.write_text("".join(lines), encoding="utf-8")
    return path
