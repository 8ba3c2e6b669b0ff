"""Property tests: malformed logs raise only DataError/InvalidArgumentError; reads give valid curves.

Inputs are random bytes and mutations of valid CSV, JSON-lines and TensorBoard files
(truncation, byte flips, inserted NaN/inf/huge tokens, reordered and duplicated rows,
well-framed records around random bodies). Each test is bounded by max_examples and a
deadline so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossrate import DataError, InvalidArgumentError, Trajectory
from lossrate.readers import read_log

pytest.importorskip("tensorboard")

FUZZ = settings(
    max_examples=120,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

TOKENS = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "-1e308",
    "1e999",
    "",
    ",",
    "\n",
    '"',
    "\t",
    "null",
    "{",
    "}",
    "[",
    "]",
    "\x00",
    "\xff",
    "-1",
    "0",
    "1.5",
    "abc",
    " - ",
    "_step",
]

OPTIONS = st.fixed_dictionaries(
    {
        "drop_nonfinite": st.booleans(),
        "allow_truncated": st.booleans(),
        "interpolate_lr": st.booleans(),
        "dedupe": st.sampled_from(["last", "error"]),
    }
)


def check_read(path: Path, **options) -> None:
    """Read ``path``; only the documented errors may escape, and a result must be valid."""
    try:
        traj = read_log(path, **options)
    except (DataError, InvalidArgumentError) as exc:
        assert str(exc)  # a message, never empty
        return
    assert isinstance(traj, Trajectory)
    assert traj.n >= 1
    assert np.all(np.diff(traj.step) > 0) and np.all(np.diff(traj.t) > 0)
    assert np.isfinite(traj.loss).all() and (traj.loss >= 0).all()
    for name, col in traj.columns().items():
        assert not np.isinf(col).any(), name


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def tables(draw) -> list[list[str]]:
    n = draw(st.integers(1, 12))
    rows = []
    for i in range(n):
        rows.append(
            [
                str(i * draw(st.integers(1, 3))),
                repr(draw(st.floats(0, 10))),
                repr(draw(st.floats(1e-4, 1.0))),
            ]
        )
    return rows


@st.composite
def mutated(draw, text: str) -> str:
    ops = draw(st.lists(st.sampled_from(["truncate", "flip", "insert", "delete"]), max_size=4))
    for op in ops:
        if not text:
            break
        at = draw(st.integers(0, len(text)))
        if op == "truncate":
            text = text[:at]
        elif op == "flip":
            ch = draw(st.characters(codec="utf-8"))
            text = text[:at] + ch + text[at + 1 :]
        elif op == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
    return text


def shuffle_rows(draw, rows: list) -> list:
    rows = list(rows)
    if draw(st.booleans()):
        rows = draw(st.permutations(rows))
    if rows and draw(st.booleans()):
        rows.insert(draw(st.integers(0, len(rows))), draw(st.sampled_from(rows)))
    return rows


@FUZZ
@given(
    data=st.binary(max_size=400),
    name=st.sampled_from(
        [
            "log.csv",
            "log.tsv",
            "h.jsonl",
            "h.json",
            "events.out.tfevents.1.x",
            "blob",
            "metrics.csv",
        ]
    ),
)
def test_random_bytes(workdir, data, name):
    p = workdir / "bytes" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    check_read(p)
    p.unlink()


@FUZZ
@given(
    rows=tables(),
    header=st.sampled_from(
        ["step,loss,lr", "global_step,train/loss,lr-SGD", "_step,loss,learning_rate"]
    ),
    data=st.data(),
    options=OPTIONS,
)
def test_mutated_csv(workdir, rows, header, data, options):
    rows = shuffle_rows(data.draw, rows)
    text = header + "\n" + "".join(",".join(r) + "\n" for r in rows)
    p = workdir / "m.csv"
    p.write_text(data.draw(mutated(text)), encoding="utf-8")
    check_read(p, **options)


@FUZZ
@given(rows=tables(), data=st.data(), options=OPTIONS)
def test_mutated_jsonl(workdir, rows, data, options):
    rows = shuffle_rows(data.draw, rows)
    records = [
        {"_step": int(s), "_runtime": 1.0 + k, "train/loss": float(v), "lr": float(lr)}
        for k, (s, v, lr) in enumerate(rows)
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    p = workdir / "m.jsonl"
    p.write_text(data.draw(mutated(text)), encoding="utf-8")
    check_read(p, **options)


def _frame(body: bytes) -> bytes:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    head = struct.pack("<Q", len(body))
    return (
        head
        + struct.pack("<I", masked_crc32c(head))
        + body
        + struct.pack("<I", masked_crc32c(body))
    )


def _event(step: int, tag: str, value: float) -> bytes:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    return event_pb2.Event(step=step, wall_time=1.7e9 + step, summary=summary).SerializeToString()


VALUES = st.one_of(
    st.floats(0, 10, width=32), st.sampled_from([float("nan"), float("inf"), 3.0e38, -1.0, 0.0])
)


@FUZZ
@given(
    events=st.lists(
        st.tuples(st.integers(-3, 2**62), st.sampled_from(["loss", "lr", "train/loss"]), VALUES),
        min_size=1,
        max_size=12,
    ),
    junk=st.lists(st.binary(max_size=40), max_size=2),
    cut=st.integers(0, 40),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=2),
    options=OPTIONS,
)
def test_mutated_event_files(workdir, events, junk, cut, flips, options):
    body = _frame(b"\x09\x00\x00\x00\x00\x00\x00\x00\x00\x1a\x0dbrain.Event:2")
    body += b"".join(_frame(_event(s, tag, v)) for s, tag, v in events)
    body += b"".join(_frame(j) for j in junk)  # valid framing, random content
    data = bytearray(body[: len(body) - cut] if cut < len(body) else body)
    for at, x in flips:
        if data:
            data[at % len(data)] ^= x
    folder = workdir / "tb"
    folder.mkdir(exist_ok=True)
    p = folder / "events.out.tfevents.1.host"
    p.write_bytes(bytes(data))
    check_read(folder, **options)
