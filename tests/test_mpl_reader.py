"""The Multi-Power-Law data reader: exact schedules, intrinsic time, metadata, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lossrate import DataError, InvalidArgumentError
from lossrate.readers.mpl import (
    MPL_FIT,
    MPL_PREDICT,
    MPL_SIZES,
    default_mpl_root,
    load_mpl,
    load_mpl_all,
    mpl_schedule,
    mpl_split,
)


def _data_root() -> Path:
    try:
        return default_mpl_root()
    except DataError:
        pytest.skip("the mpl data folder is not here (set LOSSRATE_MPL_DIR to run these tests)")


@pytest.fixture(scope="module")
def root() -> Path:
    return _data_root()


def test_split_is_the_papers() -> None:
    fit, predict = mpl_split()
    assert fit == ("cosine_24000", "constant_24000", "wsdcon_9")
    assert len(predict) == 6 and not set(fit) & set(predict)


@pytest.mark.parametrize("size", MPL_SIZES)
@pytest.mark.parametrize("name", MPL_FIT + MPL_PREDICT)
def test_rebuilt_schedule_reproduces_every_logged_lr(root: Path, size: str, name: str) -> None:
    raw = np.loadtxt(root / size / f"{name}.csv", delimiter=",", skiprows=1)
    traj, sched = load_mpl(root, size, name)
    keep = raw[:, 0] < sched.n_steps
    np.testing.assert_array_equal(traj.step, raw[keep, 0])
    np.testing.assert_allclose(sched.at(traj.step), raw[keep, 1], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(traj.loss, raw[keep, 2])
    np.testing.assert_allclose(traj.t, sched.S(traj.step), rtol=0, atol=0)
    assert traj.meta.name == f"{size}/{name}" and traj.meta.schedule == name
    assert traj.meta.loss == "ce"
    assert traj.meta.model_size == {"25M": 25e6, "100M": 100e6, "400M": 400e6}[size]


def test_load_all_reads_27_curves(root: Path) -> None:
    runs = load_mpl_all(root)
    assert len(runs) == 27
    assert runs[0][0].meta.name == "25M/cosine_24000"


def test_warmup_is_linear_from_zero_and_contributes_0324() -> None:
    sched = mpl_schedule("constant_24000")
    np.testing.assert_allclose(sched.lr[:2160], 3e-4 * np.arange(2160) / 2159, rtol=1e-14, atol=0)
    assert sched.lr[0] == 0.0 and sched.lr[2159] == 3e-4
    assert sched.S(2160) == pytest.approx(2160 * 3e-4 / 2, rel=1e-12)  # 0.324


def test_first_logged_time_of_the_cosine_run_is_the_warmup_area(root: Path) -> None:
    traj, _ = load_mpl(root, "25M", "cosine_24000")
    assert traj.step[0] == 2160 and traj.t[0] == pytest.approx(0.324, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "step", "lr"),
    [
        ("cosine_24000", 23999, 3e-5 + 2.7e-4 * 0.5 * (1 + np.cos(np.pi * 21839 / 21840))),
        ("wsd_20000_24000", 22000, np.sqrt(3e-4 * 3e-5)),
        ("wsdld_20000_24000", 22000, 1.65e-4),
        ("wsdcon_3", 7999, 3e-4),
        ("wsdcon_18", 8000, 1.8e-4),
        ("constant_72000", 71999, 3e-4),
    ],
)
def test_schedule_shapes(name: str, step: int, lr: float) -> None:
    assert mpl_schedule(name).lr[step] == pytest.approx(lr, rel=1e-12)


def test_wsdcon_runs_to_16000_steps() -> None:
    assert mpl_schedule("wsdcon_9").n_steps == 16000


def _copy(root: Path, tmp_path: Path, size: str, src: str, dst: str) -> Path:
    (tmp_path / size).mkdir(exist_ok=True)
    target = tmp_path / size / f"{dst}.csv"
    shutil.copy(root / size / f"{src}.csv", target)
    return target


def test_rows_at_or_after_the_last_step_are_dropped(root: Path, tmp_path: Path) -> None:
    target = _copy(root, tmp_path, "25M", "constant_24000", "constant_24000")
    with target.open("a") as f:
        f.write("24000,0.0003,3.3\n24064,0.0003,3.3\n")
    traj, _ = load_mpl(tmp_path, "25M", "constant_24000")
    assert traj.step[-1] < 24000
    assert traj.n == len(load_mpl(root, "25M", "constant_24000")[0].step)


def test_a_file_under_the_wrong_schedule_name_is_an_error(root: Path, tmp_path: Path) -> None:
    _copy(root, tmp_path, "25M", "constant_24000", "cosine_24000")
    with pytest.raises(DataError, match="differs from the 'cosine_24000' schedule"):
        load_mpl(tmp_path, "25M", "cosine_24000")


def test_malformed_files(tmp_path: Path) -> None:
    (tmp_path / "25M").mkdir()
    (tmp_path / "25M" / "constant_24000.csv").write_text("step,loss\n2176,4.0\n")
    with pytest.raises(DataError, match="header"):
        load_mpl(tmp_path, "25M", "constant_24000")
    (tmp_path / "25M" / "constant_24000.csv").write_text("step,lr,loss\n2176,0.0003,abc\n")
    with pytest.raises(DataError, match="not three numbers"):
        load_mpl(tmp_path, "25M", "constant_24000")
    with pytest.raises(DataError, match="does not exist"):
        load_mpl(tmp_path, "25M", "cosine_24000")


@pytest.mark.parametrize(
    ("size", "name", "match"),
    [("25M", "linear_100", "not an mpl schedule"), ("big", "constant_24000", "model size")],
)
def test_bad_names(tmp_path: Path, size: str, name: str, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        load_mpl(tmp_path, size, name)


def test_default_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOSSRATE_MPL_DIR", str(tmp_path))
    assert default_mpl_root() == tmp_path
    monkeypatch.setenv("LOSSRATE_MPL_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="LOSSRATE_MPL_DIR"):
        default_mpl_root()


def test_without_environment_or_shared_folder_the_error_says_to_pass_the_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lossrate.readers.mpl as mpl

    monkeypatch.delenv("LOSSRATE_MPL_DIR", raising=False)
    monkeypatch.setattr(mpl, "__file__", "/nonexistent/repo/src/lossrate/readers/mpl.py")
    with pytest.raises(DataError, match="pass root="):
        default_mpl_root()
