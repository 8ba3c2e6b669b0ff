"""``evaluate(..., jobs=N)`` / ``lossrate evaluate --jobs N``: the prefix protocol's fits on a
process pool give the serial table (same rows, same order; only the timing differs)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lossrate import RunMeta, Schedule, Trajectory
from lossrate.evaluate import evaluate
from test_evaluate import synthetic


def _table(tab):
    return [repr(dataclasses.replace(r, seconds=0.0)) for r in tab.rows], list(tab.skipped)


@pytest.mark.slow  # about 40 s: auto fits twice over
def test_a_pool_gives_the_serial_table() -> None:
    steps = np.arange(0, 40)
    short = Trajectory.from_arrays(
        2.0 * (1 + steps) ** -0.3, step=steps, lr=np.full(40, 0.1), meta=RunMeta(name="short")
    )
    runs = {
        "a": synthetic("a", "cosine", 0, n=400),
        "b": synthetic("b", "constant", 1, n=400),
        "short": (short, Schedule.constant(0.1, 40)),
    }
    models = ["auto", "ode", ("pw", "power_S", {"loss": "huber"})]
    kw = {"fractions": (0.3, 0.6), "fit_options": {"bootstrap": 0}}
    serial = evaluate(runs, models, **kw)
    pooled = evaluate(runs, models, jobs=2, **kw)
    assert len(serial.rows) == 18
    assert _table(pooled) == _table(serial)
