"""``evaluate(..., jobs=N)`` / ``lossrate evaluate --jobs N``: the prefix protocol's fits on a
process pool give the serial table (same rows, same order; only the timing differs)."""

from __future__ import annotations

import dataclasses
import importlib.util

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


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (pip install 'lossrate[ray]')",
)
@pytest.mark.timeout(300)
def test_ray_tasks_give_the_serial_table() -> None:
    runs = {
        "a": synthetic("a", "cosine", 0, n=300),
        "b": synthetic("b", "constant", 1, n=300),
    }
    models = ["ode", ("pw", "power_S", {"loss": "huber"}), ("ex", "exponential", {})]
    kw = {"fractions": (0.3, 0.6), "fit_options": {"bootstrap": 0}}
    serial = evaluate(runs, models, **kw)
    on_ray = evaluate(runs, models, jobs=2, address="local", **kw)
    assert len(serial.rows) == 12
    assert _table(on_ray) == _table(serial)


def test_an_address_without_ray_says_how_to_install_it(monkeypatch, tmp_path, capsys) -> None:
    import builtins

    from lossrate.cli import main

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    traj, _ = synthetic("a", "constant", 0, n=200)
    path = tmp_path / "a.csv"
    traj.write(path)
    code = main(["evaluate", str(path), "--models", "ode", "--address", "local", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'lossrate[ray]'" in err and "--address" in err


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (pip install 'lossrate[ray]')",
)
@pytest.mark.timeout(120)
def test_a_dead_address_fails_fast_naming_it(tmp_path, capsys) -> None:
    """Ray's own join retries an address where nothing listens for minutes; evaluate stops
    within seconds with exit 2 naming --address, the value and the fix."""
    import socket
    import time

    from lossrate.cli import main

    with socket.socket() as s:  # a port bound once and released: nothing listens there
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    traj, _ = synthetic("a", "constant", 0, n=200)
    path = tmp_path / "a.csv"
    traj.write(path)
    t0 = time.perf_counter()
    code = main(["evaluate", str(path), "--models", "ode", "--address", address, "-q"])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and seconds < 60
    assert f"--address {address!r}: nothing answers" in err
    assert "ray start --head" in err and "leave out --address" in err


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (pip install 'lossrate[ray]')",
)
def test_an_address_that_is_not_one_is_named() -> None:
    from lossrate._errors import InvalidArgumentError

    runs = {"a": synthetic("a", "constant", 0, n=200)}
    with pytest.raises(InvalidArgumentError, match=r"address='head' is not a Ray address"):
        evaluate(runs, ["ode"], fractions=(0.5,), address="head")
