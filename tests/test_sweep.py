"""Sweeps: config validation and expansion, the serial executor (equal to running the configs
one by one, resume after a cut-short run, retries of a failing run), the CLI, the Ray
executor (when Ray is installed) and that ``import lossrate`` does not import Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lossrate import Trajectory  # noqa: E402
from lossrate._errors import InvalidArgumentError  # noqa: E402
from lossrate.cli import main  # noqa: E402
from lossrate.experiments import load_config, run_experiment  # noqa: E402
from lossrate.experiments.checkpoint import CHECKPOINT_NAME  # noqa: E402
from lossrate.experiments.sweep import load_sweep, sweep_from_dict  # noqa: E402
from lossrate.experiments.sweep_exec import DONE_NAME, ray_available, run_sweep  # noqa: E402

TIMING = ("wall_s", "energy_j")  # measured per process: the only columns allowed to differ
STEPS = 20

TINY = f"""
name = "tiny"
base = "teacher_student_gd"
[set]
"train.steps" = {STEPS}
"train.batch_size" = 32
"train.eval_every" = 5
"train.checkpoint_every" = 5
"data.teacher.n_train" = 100
"data.teacher.n_test" = 50
[grid]
"optim.lr" = [0.05, 0.1]
"train.seed" = [0, 1]
"""


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


def columns(path: Path) -> dict[str, np.ndarray]:
    return {k: v for k, v in Trajectory.read(path).columns().items() if k not in TIMING}


def same_run(a: Path, b: Path) -> None:
    ca, cb = columns(a / "trajectory.csv"), columns(b / "trajectory.csv")
    assert ca.keys() == cb.keys()
    for key in ca:
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
    assert len(ca["step"]) == STEPS and list(ca["step"]) == list(range(STEPS))


# ------------------------------------------------------------------ config
def test_grid_expands_in_a_fixed_order(tiny: Path) -> None:
    plan = load_sweep(tiny).plan()
    assert [r.name for r in plan] == [
        "teacher_student_gd__lr0.05__seed0",
        "teacher_student_gd__lr0.05__seed1",
        "teacher_student_gd__lr0.1__seed0",
        "teacher_student_gd__lr0.1__seed1",
    ]
    assert [(r.config.optim.lr, r.config.train.seed) for r in plan] == [
        (0.05, 0), (0.05, 1), (0.1, 0), (0.1, 1)
    ]  # fmt: skip
    assert all(r.config.train.steps == STEPS and r.config.name == r.name for r in plan)


def test_shipped_schedule_sweep_keeps_its_run_names() -> None:
    plan = load_sweep("sweep_schedules").plan()
    assert len(plan) == 36
    base = load_config("fashion_cnn_adam_cosine")
    assert plan[0].name == f"fashion_cnn_adam_cosine__lr{base.optim.lr * 0.3:g}_constant_s0"
    assert plan[0].config.optim.lr == pytest.approx(base.optim.lr * 0.3)


def test_train_on_a_sweep_points_to_the_sweep_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "sweep_schedules"]) == 2
    assert "lossrate sweep sweep_schedules" in capsys.readouterr().err


def test_runs_entries_and_templates() -> None:
    sweep = sweep_from_dict(
        {
            "base": "teacher_student_gd",
            "run_name": "r{i}_{optim.name}_lr{optim.lr:g}",
            "grid": {"train": {"seed": [3]}},  # a nested table means the same as "train.seed"
            "runs": [{"optim.name": "adam", "optim.lr": 1e-3}, {"lr_factor": 0.5}],
        }
    )
    plan = sweep.plan()
    assert [r.name for r in plan] == ["r0_adam_lr0.001", "r1_sgd_lr0.05"]
    assert all(r.config.train.seed == 3 for r in plan)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"grid": {"optim.lrr": [0.1]}}, r"optim\.lrr.*no such key"),
        ({"grid": {"optim.lr": 0.1}}, r"\[grid\] optim\.lr = 0\.1: a grid key takes a non-empty"),
        ({"grid": {"optim.lr": [-1.0]}}, r"optim\.lr = -1\.0.*> 0"),
        ({"grid": {"lr_factor": [0]}}, r"lr_factor = 0: must be a number > 0"),
        ({"grid": {"optim.lr": [0.1, 0.1]}}, r"both named"),
        ({"run_name": "x", "grid": {"train.seed": [0, 1]}}, r"both named 'x'"),
        ({"run_name": "{nope}"}, r"run_name = '\{nope\}' cannot be filled in"),
        ({"experiments": ["a"]}, r"old sweep format"),
        ({"base": 3}, r"base = 3"),
        ({"base": "no_such_config"}, r"neither a file nor a shipped config"),
    ],
)
def test_bad_sweeps_name_file_key_and_value(tmp_path: Path, table: dict, match: str) -> None:
    table = {"base": "teacher_student_gd", **table}
    path = tmp_path / "bad.toml"
    from lossrate.experiments.config import _to_toml

    path.write_text(_to_toml(table) if "base" in table else "", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match=match) as err:
        load_sweep(path)
    assert str(path) in str(err.value)


# ------------------------------------------------------------------ serial executor
def test_serial_sweep_equals_the_runs_one_by_one(tiny: Path, tmp_path: Path) -> None:
    sweep = load_sweep(tiny)
    result = run_sweep(sweep, tmp_path / "out", executor="serial", progress=False)
    assert [o.status for o in result.outcomes] == ["done"] * 4
    for run in sweep.plan():
        alone = tmp_path / "alone" / run.name
        run_experiment(run.config, alone, device="cpu", progress=False)
        same_run(tmp_path / "out" / run.name, alone)
        assert (tmp_path / "out" / run.name / DONE_NAME).is_file()
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done"] * 4


def test_resume_finishes_cut_short_runs_without_duplicates(tiny: Path, tmp_path: Path) -> None:
    sweep = load_sweep(tiny)
    ref = tmp_path / "ref"
    run_sweep(sweep, ref, executor="serial", progress=False)
    out = tmp_path / "out"
    plan = sweep.plan()
    # run 0 finished; run 1 killed after a checkpoint with rows beyond it on disk; run 2 killed
    # between its rows and its done marker; run 3 never started
    run_experiment(plan[0].config, out / plan[0].name, progress=False)
    (out / plan[0].name / DONE_NAME).write_text("{}\n")
    run_experiment(plan[1].config, out / plan[1].name, progress=False, stop_at=10)
    with (out / plan[1].name / "trajectory.csv").open("a") as f:
        f.write("10,0.5,0.1,0.05,0.1,32.0")  # a torn row, as a kill leaves it
    run_experiment(plan[2].config, out / plan[2].name, progress=False)
    with pytest.raises(InvalidArgumentError, match="already holds 3 run"):
        run_sweep(sweep, out, executor="serial", progress=False)
    result = run_sweep(sweep, out, executor="serial", progress=False, resume=True)
    assert [o.status for o in result.outcomes] == ["skipped", "done", "done", "done"]
    for run in plan:
        same_run(out / run.name, ref / run.name)


def test_failing_run_is_reported_after_its_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TINY.split("[grid]")[0]
    text += '[[runs]]\nname = "ok"\n\n[[runs]]\nname = "broken"\n'
    text += '"data.name" = "idx_folder"\n"data.root" = "/no/such/folder"\n'
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    code = main(
        ["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "serial",
         "--retries", "2", "-q"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert "1 of 2 runs failed after 3 tries each: broken" in err
    assert err.count("run broken failed (try") == 2
    assert (tmp_path / "out" / "ok" / DONE_NAME).is_file()
    assert not (tmp_path / "out" / "broken" / DONE_NAME).exists()
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [(r["name"], r["status"], r["attempts"]) for r in summary["runs"]] == [
        ("ok", "done", 1), ("broken", "failed", 3)
    ]  # fmt: skip


def test_cli_sweep_and_prior_from_its_folder(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    args = ["sweep", str(tiny), "--out", str(out), "--executor", "serial", "-q"]
    assert main(args) == 0
    assert main(args) == 2  # the folder holds the sweep: --resume or another --out
    assert main([*args, "--resume"]) == 0
    from lossrate.prior import Prior

    prior = Prior.from_path(out)  # the finished runs are a prior at once
    assert prior is not None


def test_prior_from_a_sweep_folder_leaves_out_unfinished_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--prior (and Prior.from_runs) on a sweep's folder use its finished runs only and name
    the others with the reason, never reading a partial trajectory: one run cut short (no
    marker, half its rows), one failed (per sweep.json), one listed but never started."""
    import shutil

    from lossrate.prior import Prior
    from lossrate.readers import read_log

    six = tmp_path / "six.toml"
    six.write_text(TINY.replace("[0.05, 0.1]", "[0.05, 0.1, 0.2]"), encoding="utf-8")
    sweep = load_sweep(six)
    out = tmp_path / "runs"
    run_sweep(sweep, out, executor="serial", progress=False)
    a, cut, failed, b, gone, c = [r.name for r in sweep.plan()]
    (out / cut / DONE_NAME).unlink()
    log = out / cut / "trajectory.csv"
    rows = log.read_text().splitlines(keepends=True)
    log.write_text("".join(rows[: len(rows) // 2]))
    (out / failed / DONE_NAME).unlink()
    shutil.rmtree(out / gone)
    summary = json.loads((out / "sweep.json").read_text())
    for run in summary["runs"]:
        if run["name"] == failed:
            run.update(status="failed", attempts=2, error="RuntimeError: boom")
    (out / "sweep.json").write_text(json.dumps(summary))
    reasons = [
        f"{cut} (unfinished: no sweep_done marker)",
        f"{failed} (failed after 2 tries: RuntimeError: boom)",
        f"{gone} (not started)",
    ]

    with pytest.warns(UserWarning, match="left out 3 run") as caught:
        prior = Prior.from_runs(out, "power_steps")
    text = str(caught[0].message)
    assert all(r in text for r in reasons) and a not in text
    assert prior.source_names == (a, b, c)
    alone = {n: read_log(out / n / "trajectory.csv") for n in (a, b, c)}
    assert prior.to_dict() == Prior.from_runs(alone, "power_steps").to_dict()
    # Prior.from_path too, leaving out the run being fitted
    own = out / a / "trajectory.csv"  # the fitted run is never in its own prior
    with pytest.warns(UserWarning, match="path=.* left out 3 run"):
        by_path = Prior.from_path(out, "power_steps", exclude=[own])
    assert by_path.source_names == (b, c)

    saved = tmp_path / "prior.json"
    code = main(
        ["fit", str(own), "--until", "0.5", "--prior", str(out), "--model", "power_steps",
         "--save-prior", str(saved), "-q"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"--prior {str(out)!r} is a sweep folder: left out 3 run(s)" in err
    assert all(r in err for r in reasons)
    assert Prior.load(saved).source_names == (b, c)


# ------------------------------------------------------------------ Ray
@pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install 'lossrate[ray]')"
)
@pytest.mark.timeout(300)
def test_ray_sweep_gives_the_serial_folders(tmp_path: Path) -> None:
    six = tmp_path / "six.toml"  # the check: a 6-run sweep on 2 Ray workers
    six.write_text(TINY.replace("[0.05, 0.1]", "[0.05, 0.1, 0.2]"), encoding="utf-8")
    sweep = load_sweep(six)
    assert len(sweep.plan()) == 6
    run_sweep(sweep, tmp_path / "serial", executor="serial", progress=False)
    result = run_sweep(sweep, tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert result.executor == "ray" and [o.status for o in result.outcomes] == ["done"] * 6
    for run in sweep.plan():
        same_run(tmp_path / "ray" / run.name, tmp_path / "serial" / run.name)
        assert sorted(p.name for p in (tmp_path / "ray" / run.name).iterdir()) == sorted(
            p.name for p in (tmp_path / "serial" / run.name).iterdir()
        )
        assert (tmp_path / "ray" / run.name / CHECKPOINT_NAME).is_file()


def _dead_address() -> str:
    """A local address where nothing listens (a port bound once and released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install 'lossrate[ray]')"
)
@pytest.mark.timeout(120)
def test_a_dead_address_fails_fast_naming_it(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray's own join retries an address where nothing listens for minutes; the sweep stops
    within seconds with exit 2, naming --address, the value and the fix, and trains nothing."""
    import time

    address = _dead_address()
    t0 = time.perf_counter()
    code = main(["sweep", str(tiny), "--out", str(tmp_path / "o"), "--address", address, "-q"])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and seconds < 60
    assert f"--address {address!r}: nothing answers" in err
    assert "ray start --head" in err and "leave out --address" in err
    assert not any((tmp_path / "o").glob("*/trajectory.csv"))


@pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install 'lossrate[ray]')"
)
def test_a_dead_ray_address_variable_is_named(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", _dead_address())
    with pytest.raises(
        InvalidArgumentError, match=r"RAY_ADDRESS.*nothing answers.*unset RAY_ADDRESS"
    ):
        run_sweep(load_sweep(tiny), tmp_path / "o", executor="ray", progress=False)


def test_serial_fallback_says_how_to_install_ray(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lossrate.experiments.sweep_exec as ex

    monkeypatch.setattr(ex, "ray_available", lambda: False)
    said: list[str] = []
    result = run_sweep(
        load_sweep(tiny), tmp_path / "o", executor="ray", progress=False, notice=said.append
    )
    assert result.executor == "serial"
    assert any("pip install 'lossrate[ray]'" in s for s in said)


def test_import_lossrate_does_not_import_ray() -> None:
    code = (
        "import sys, lossrate, lossrate.experiments, lossrate.experiments.sweep_exec, "
        "lossrate.cli; assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ a real kill
@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX SIGKILL")
@pytest.mark.timeout(300)
def test_sigkilled_sweep_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """`lossrate sweep` in a child process is SIGKILLed while its second run is writing rows;
    `--resume` then finishes every run with exactly the rows of an uninterrupted sweep."""
    import os
    import signal
    import time

    steps = 400
    text = TINY.replace(f'"train.steps" = {STEPS}', f'"train.steps" = {steps}')
    text = text.replace('"train.checkpoint_every" = 5', '"train.checkpoint_every" = 37')
    text = text.replace("[grid]", '"train.log_flush_every" = 3\n[grid]')
    path = tmp_path / "long.toml"
    path.write_text(text, encoding="utf-8")
    sweep = load_sweep(path)
    plan = sweep.plan()
    out = tmp_path / "out"
    run_cli = "import sys; from lossrate.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", run_cli, "sweep", str(path), "--out", str(out),
           "--executor", "serial", "-q"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = out / plan[1].name / "trajectory.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if victim.is_file() and victim.read_text().count("\n") > 2 + steps // 3:
            break
        time.sleep(0.005)
    assert child.poll() is None, "the sweep finished before it could be killed; make it longer"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (out / plan[0].name / DONE_NAME).is_file()
    assert not (out / plan[1].name / DONE_NAME).exists()
    assert subprocess.run([*cmd, "--resume"], env=env, check=False).returncode == 0
    ref = tmp_path / "ref"
    run_sweep(sweep, ref, executor="serial", progress=False)
    for run in plan:
        a = columns(out / run.name / "trajectory.csv")
        b = columns(ref / run.name / "trajectory.csv")
        assert list(a["step"]) == list(range(steps))  # no duplicated or missing rows
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{run.name}: {key}")


@pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install 'lossrate[ray]')"
)
@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX SIGKILL")
@pytest.mark.timeout(300)
def test_ray_worker_sigkilled_mid_run_is_retried_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = 300
    text = TINY.replace(f'"train.steps" = {STEPS}', f'"train.steps" = {steps}')
    text = text.replace('"train.checkpoint_every" = 5', '"train.checkpoint_every" = 37')
    path = tmp_path / "long.toml"
    path.write_text(text, encoding="utf-8")
    sweep = load_sweep(path)
    plan = sweep.plan()
    marker = tmp_path / "killed"
    monkeypatch.setenv("LOSSRATE_SWEEP_KILL_ONCE", f"{plan[1].name}:120:{marker}")
    result = run_sweep(sweep, tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert marker.is_file(), "the worker was not killed"
    assert [o.status for o in result.outcomes] == ["done"] * 4
    monkeypatch.delenv("LOSSRATE_SWEEP_KILL_ONCE")
    run_sweep(sweep, tmp_path / "serial", executor="serial", progress=False)
    for run in plan:
        a = columns(tmp_path / "ray" / run.name / "trajectory.csv")
        b = columns(tmp_path / "serial" / run.name / "trajectory.csv")
        assert list(a["step"]) == list(range(steps))
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{run.name}: {key}")


@pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install 'lossrate[ray]')"
)
@pytest.mark.timeout(300)
def test_ray_reports_a_failing_run_after_its_retries(tmp_path: Path) -> None:
    text = TINY.split("[grid]")[0]
    text += '[[runs]]\nname = "ok"\n\n[[runs]]\nname = "broken"\n'
    text += '"data.name" = "idx_folder"\n"data.root" = "/no/such/folder"\n'
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    result = run_sweep(
        load_sweep(path), tmp_path / "out", executor="ray", workers=2, retries=1, progress=False
    )
    assert [(o.name, o.status) for o in result.outcomes] == [("ok", "done"), ("broken", "failed")]
    assert "/no/such/folder" in result.failed[0].error
    assert (tmp_path / "out" / "ok" / DONE_NAME).is_file()


def test_cli_dry_run_lists_the_runs_with_set(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", str(tiny), "--dry-run", "--set", "train.steps=7", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"] == [r.name for r in load_sweep(tiny).plan()]
    assert all(
        r.config.train.steps == 7 for r in load_sweep(tiny).with_changes({"train.steps": 7}).plan()
    )
    assert main(["sweep", str(tiny), "--set", "optim.lrr=1", "--dry-run"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
