"""The validation layer of the files lossrate reads (issue 18): priors, fit JSONs, trajectory
header metadata. Every malformed file is a DataError naming the file, the field and the value."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lossrate import DataError, Trajectory
from lossrate.prior import Prior
from lossrate.readers import read_log

GOOD_PRIOR: dict[str, Any] = {
    "format": "lossrate-prior",
    "version": 1,
    "model": "ode_relax",
    "model_options": {},
    "level": 0.9,
    "params": {
        "rho_ref": {
            "centre": -5.0,
            "spread": 0.1,
            "log": True,
            "kind": "per_run",
            "covariate": None,
            "slope": 0.0,
            "log_ref": 0.0,
        }
    },
    "sources": [
        {
            "name": "a",
            "peak_lr": 0.1,
            "schedule": "cosine",
            "decayed": True,
            "loss": "ce",
            "n_points": 100,
        }
    ],
}


def _write(path: Path, data: Any = None, raw: str | None = None) -> Path:
    path.write_text(raw if raw is not None else json.dumps(data), encoding="utf-8")
    return path


def test_a_good_prior_reads(tmp_path: Path) -> None:
    prior = Prior.from_path(_write(tmp_path / "p.json", GOOD_PRIOR), "ode_relax")
    assert prior.params["rho_ref"].centre == -5.0 and prior.params["rho_ref"].kind == "per_run"


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("log", False, r"params\.rho_ref\.log.*log scale"),  # rho_ref: -5 read as a value
        ("kind", "weird", r"params\.rho_ref\.kind.*'weird'.*one of"),
        ("log", "yes", r"params\.rho_ref\.log.*'yes'.*true or false"),
        ("centre", None, r"params\.rho_ref\.centre.*None.*number, not null"),
        ("centre", "1.0", r"params\.rho_ref\.centre.*number, not a string"),
        ("centre", 1e308, r"params\.rho_ref\.centre.*outside the model's range"),
        ("spread", -1.0, r"params\.rho_ref\.spread.*>= 0"),
        ("colour", 1, r"unknown key"),
    ],
)
def test_a_malformed_prior_param_names_file_field_and_value(
    tmp_path: Path, field: str, value: Any, match: str
) -> None:
    data = copy.deepcopy(GOOD_PRIOR)
    data["params"]["rho_ref"][field] = value
    path = _write(tmp_path / "p.json", data)
    with pytest.raises(DataError, match=match) as info:
        Prior.from_path(path, "ode_relax")
    assert "p.json" in str(info.value) and "Prior.save" in str(info.value)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"version": True}, r"'version'.*whole number"),
        ({"level": 5}, r"'level'.*< 1"),
        ({"model": "zzz"}, r"'model'.*'zzz'"),
        ({"sources": None}, r"'sources'.*list"),
        ({"params": {"rho_ref": -5}}, r"params\.rho_ref.*-5.*object"),
        ({"params": {"nope": {"centre": 0, "spread": 1, "log": False}}}, r"no parameter"),
        ({"params": {}}, r"'params' is empty"),
    ],
)
def test_a_malformed_prior_file_is_a_data_error(
    tmp_path: Path, change: dict[str, Any], match: str
) -> None:
    data = {**copy.deepcopy(GOOD_PRIOR), **change}
    with pytest.raises(DataError, match=match):
        Prior.from_path(_write(tmp_path / "p.json", data), "ode_relax")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (json.dumps(GOOD_PRIOR).replace("-5.0", "1e999"), "out of the range of a float"),
        (json.dumps(GOOD_PRIOR).replace("-5.0", "1" * 5000), "5000 digits"),
        (json.dumps(GOOD_PRIOR).replace("-5.0", "NaN"), "not a finite number"),
        ("[1, 2]", "must be an object, not a list"),
        ("[" * 100_000 + "]" * 100_000, "nested more than"),
        ('{"params": ' * 50 + "1" + "}" * 50, "nested more than"),
        ("{", "not valid JSON"),
    ],
)
def test_hostile_json_is_a_data_error(tmp_path: Path, raw: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        Prior.from_path(_write(tmp_path / "p.json", raw=raw), "ode_relax")


def test_a_fit_json_with_a_negative_log_scale_parameter_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.json", {"params": {"rho_ref": -5, "L_inf": 0.5}})
    with pytest.raises(DataError, match=r"params\.rho_ref.*-5"):
        Prior.from_path(path, "ode_relax")
    ok = Prior.from_path(_write(path, {"params": {"rho_ref": 0.5, "L_inf": 0.5}}), "ode_relax")
    assert ok.params["rho_ref"].value_at() == pytest.approx(0.5)


# ------------------------------------------------------------------ trajectory metadata
@pytest.fixture
def traj_lines(tmp_path: Path) -> tuple[dict[str, Any], str]:
    t = Trajectory.from_arrays([3.0, 2, 1.5, 1.2, 1.1, 1.0, 0.95, 0.9], lr=[0.1] * 8)
    first, rest = t.write(tmp_path / "t.csv").read_text().split("\n", 1)
    return json.loads(first[1:]), rest


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"peak_lr": "abc"}, r"meta\.peak_lr.*'abc'.*number"),
        ({"peak_lr": -1.0}, r"meta\.peak_lr.*> 0"),
        ({"time_unit": "fortnights"}, r"meta\.time_unit.*'fortnights'.*'intrinsic', 'step'"),
        ({"classes": 2.5}, r"meta\.classes.*whole number"),
        ({"loss": 3}, r"meta\.loss.*string"),
        ({"extra": {"a": [[1]]}}, r"meta\.extra\.a"),
        ({"extra": "x"}, r"meta\.extra.*object"),
    ],
)
def test_bad_header_metadata_names_the_field(
    tmp_path: Path, traj_lines: tuple[dict[str, Any], str], meta: dict[str, Any], match: str
) -> None:
    header, rest = traj_lines
    header = {**header, "meta": {**header["meta"], **meta}}
    path = tmp_path / "bad.csv"
    path.write_text("# " + json.dumps(header) + "\n" + rest, encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        read_log(path)
    assert "bad.csv" in str(info.value)


def test_a_100000_deep_header_is_a_data_error_not_a_recursion_error(
    tmp_path: Path, traj_lines: tuple[dict[str, Any], str]
) -> None:
    _, rest = traj_lines
    path = tmp_path / "deep.csv"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text(
        '# {"format": "lossrate-trajectory", "version": 1, "meta": ' + deep + "}\n" + rest,
        encoding="utf-8",
    )
    with pytest.raises(DataError, match="nested more than"):
        read_log(path)


# ------------------------------------------------------------------ configs and checkpoints
def test_a_config_named_dot_dot_or_nested_too_deep_is_refused(tmp_path: Path) -> None:
    from lossrate import InvalidArgumentError
    from lossrate.experiments.config import load_config

    (tmp_path / "dd.toml").write_text('name = ".."\n')
    with pytest.raises(InvalidArgumentError, match=r"name = '\.\.'.*'\.\.' or a path is refused"):
        load_config(tmp_path / "dd.toml")
    with pytest.raises(InvalidArgumentError, match="neither a file nor a shipped config name"):
        load_config("../../etc/x")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError, match="nested too deeply"):
        load_config(tmp_path / "deep.toml")


def test_a_foreign_checkpoint_gets_lossrates_message_and_temporaries_are_cleaned(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    from lossrate.experiments import run_experiment
    from lossrate.experiments.config import load_config

    cfg = load_config("teacher_student_gd")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(cfg.to_toml())
    torch.save({"evil": _Evil()}, run / "checkpoint.pt")
    (run / ".checkpoint.pt.k3j4h5g6.tmp").write_bytes(b"\0" * 1000)  # left by a killed run
    with pytest.raises(DataError, match="not one lossrate wrote") as info:
        run_experiment(cfg, run, resume=True, progress=False)
    assert "weights_only" not in str(info.value) and "--resume" in str(info.value)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.toml"]


class _Evil:
    """An object torch's safe loader refuses (a pickle could run code)."""


def test_a_damaged_row_on_resume_names_its_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from lossrate.experiments.runner import _truncate_rows

    path = tmp_path / "trajectory.csv"
    path.write_text("# {}\nstep,t,loss\n0,0.0,1.0\nx1,0.1,0.9\n2,0.2,0.8\n3,0.3,0.7\n")
    with pytest.raises(DataError, match="line 4 is damaged"):
        _truncate_rows(path, 3)
    path.write_text("# {}\nstep,t,loss\n0,0.0,1.0\n1,0.1,0.9\n2,0.2,0.8\n\x00\x00\n")
    _truncate_rows(path, 2)  # a damaged last row: a write the kill cut short
    assert path.read_text().splitlines()[2:] == ["0,0.0,1.0", "1,0.1,0.9"]
