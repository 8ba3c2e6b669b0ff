"""Fuzz tests (hypothesis, bounded): generated priors, fit JSONs, trajectory headers and CLI
argument combinations. Only the documented exceptions (DataError, InvalidArgumentError) escape
the readers, and the command exits 0, 2 or 3, never 4 (an internal error) (issue 18)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossrate import DataError, InvalidArgumentError, Trajectory
from lossrate.cli import main
from lossrate.prior import Prior
from lossrate.readers import read_log
from test_validation import GOOD_PRIOR

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
#: number literals JSON allows (or that Python's json reads) that no float holds well
odd_numbers = st.sampled_from(
    ["1e999", "-1e999", "NaN", "Infinity", "1" * 5000, "1e308", "-0", "0.0", "1e-400", "true"]
)

PRIOR_FIELDS = [
    ("version",),
    ("model",),
    ("model_options",),
    ("level",),
    ("params",),
    ("params", "rho_ref"),
    ("params", "rho_ref", "centre"),
    ("params", "rho_ref", "spread"),
    ("params", "rho_ref", "log"),
    ("params", "rho_ref", "kind"),
    ("params", "rho_ref", "covariate"),
    ("params", "rho_ref", "slope"),
    ("sources",),
    ("sources", 0),
    ("sources", 0, "decayed"),
    ("sources", 0, "peak_lr"),
    ("sources", 0, "n_points"),
]


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _reads_or_refuses(read: Any) -> None:
    try:
        read()
    except (DataError, InvalidArgumentError) as exc:
        assert str(exc).strip()


@FUZZ
@given(field=st.sampled_from(PRIOR_FIELDS), value=json_values)
def test_generated_prior_files(tmp_path: Path, field: tuple[Any, ...], value: Any) -> None:
    path = tmp_path / "prior.json"
    path.write_text(json.dumps(_set(GOOD_PRIOR, field, value)))
    _reads_or_refuses(lambda: Prior.from_path(path, "ode_relax"))


@FUZZ
@given(field=st.sampled_from(PRIOR_FIELDS), literal=odd_numbers)
def test_prior_files_with_odd_number_literals(
    tmp_path: Path, field: tuple[Any, ...], literal: str
) -> None:
    path = tmp_path / "prior.json"
    text = json.dumps(_set(GOOD_PRIOR, field, "@@")).replace('"@@"', literal)
    path.write_text(text)
    _reads_or_refuses(lambda: Prior.from_path(path, "ode_relax"))


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["rho_ref", "L_inf", "L0", "beta", "B", "x"]) | st.text(max_size=5),
        json_values,
        max_size=5,
    ),
    extra=json_values,
    top=st.booleans(),
)
def test_generated_fit_jsons(tmp_path: Path, params: dict[str, Any], extra: Any, top: bool) -> None:
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"params": params, "extra": extra} if top else [params]))
    _reads_or_refuses(lambda: Prior.from_path(path, "ode_relax"))


@pytest.fixture(scope="module")
def traj_text(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    t = Trajectory.from_arrays([3.0, 2, 1.5, 1.2, 1.1, 1.0, 0.95, 0.9], lr=[0.1] * 8)
    first, rest = t.write(tmp_path_factory.mktemp("t") / "t.csv").read_text().split("\n", 1)
    return json.loads(first[1:]), rest


META_KEYS = [
    "loss",
    "classes",
    "label_smoothing",
    "mse_scale",
    "peak_lr",
    "batch_size",
    "model_size",
    "time_unit",
    "name",
    "extra",
    "unknown_key",
]


@FUZZ
@given(
    meta=st.dictionaries(st.sampled_from(META_KEYS), json_values, max_size=4),
    raw=st.none() | st.text(max_size=40) | st.integers(1, 3000).map(lambda n: "[" * n),
)
def test_generated_trajectory_headers(
    tmp_path: Path, traj_text: tuple[dict[str, Any], str], meta: dict[str, Any], raw: str | None
) -> None:
    header, rest = traj_text
    if raw is None:
        line = json.dumps({**header, "meta": {**header["meta"], **meta}})
    else:
        line = '{"format": "lossrate-trajectory", "version": 1, "meta": ' + raw
    path = tmp_path / "t.csv"
    path.write_text("# " + line + "\n" + rest, encoding="utf-8")
    _reads_or_refuses(lambda: read_log(path))


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    s = np.arange(40, dtype=float)
    lr = np.where(s < 5, 0.05 * (s + 1) / 5, 0.05)
    loss = 0.4 + 2.0 / (1.0 + 0.5 * np.cumsum(lr))
    path = folder / "run.csv"
    Trajectory.from_arrays(loss, step=s, lr=lr).write(path)
    return path


OPTION_VALUES = {
    "--until": ["0.5", "1", "0", "1.5", "abc", "-0.2", "nan"],
    "--until-step": ["20", "0", "39", "1000", "-1", "x"],
    "--level": ["0.9", "0.5", "1", "0", "inf"],
    "--fix": ["L0=0.3", "A=1", "nope=1", "L0=abc", "L0", "=1", "alpha=-1", "L0=nan"],
    "--loss": ["ce", "mse", "bce", "weird", ""],
    "--classes": ["10", "1", "0", "-3", "x"],
    "--alpha": ["1.5", "0", "3", "abc"],
    "--lr": ["0.1", "0", "-1", "inf"],
    "--max-bytes": ["10", "0", "1M", "abc", "-5"],
    "--format": ["auto", "csv", "trajectory", "wandb", "tensorboard", "excel"],
    "--schedule": ["cosine", "wsd", "step", "linear", "zigzag"],
    "--steps": ["60", "10", "0", "abc"],
    "--warmup": ["0", "5", "100", "-1"],
    "--peak-lr": ["0.1", "0", "abc"],
    "--decay-start": ["30", "0", "1000"],
    "--target": ["0.5", "0", "-1", "10"],
    "--schedule-of-log": ["cosine", "constant", "linear", "wsd"],
    "--param": ["a=0.1", "alpha=1.6", "x=y"],
    "--prior": ["PRIOR", "LOG", "/no/such/dir"],
}
COMMAND_OPTIONS = {
    "predict": [k for k in OPTION_VALUES if k != "--target"],
    "floor": [
        k
        for k in OPTION_VALUES
        if k
        not in (
            "--schedule",
            "--steps",
            "--peak-lr",
            "--decay-start",
            "--prior",
            "--warmup",
        )
    ],
}


@st.composite
def cli_args(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMAND_OPTIONS)))
    names = draw(st.lists(st.sampled_from(COMMAND_OPTIONS[command]), unique=True, max_size=4))
    argv = [command, "LOG", "--bootstrap", "0", "-q"]
    argv += ["--model", draw(st.sampled_from(["power_steps", "exponential", "ode"]))]
    for name in names:
        argv += [name, draw(st.sampled_from(OPTION_VALUES[name]))]
    if draw(st.booleans()):
        argv.append("--json")
    return argv


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(argv=cli_args())
def test_cli_argument_combinations_exit_0_2_or_3(
    capsys: pytest.CaptureFixture[str], small_log: Path, argv: list[str]
) -> None:
    prior = small_log.parent / "prior.json"
    if not prior.exists():
        prior.write_text(json.dumps(GOOD_PRIOR))
    names = {"LOG": str(small_log), "PRIOR": str(prior)}
    code = main([names.get(a, a) for a in argv])
    err = capsys.readouterr().err
    assert code in (0, 2, 3), f"{argv} -> exit {code}: {err}"
    assert "Traceback" not in err and "internal error" not in err
