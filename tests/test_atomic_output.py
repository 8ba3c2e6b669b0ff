"""Output folders are written whole (issue 18): ``lossrate fit`` killed (SIGKILL, the CLI in a
subprocess) at each of its writes leaves the old report folder or the new one, complete; the
next run cleans what the killed one left; outputs that would replace an input or user files
are refused before any fitting work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lossrate import InvalidArgumentError, Trajectory
from lossrate._folders import MANIFEST, check_output_folder, clean_stale, write_folder
from lossrate.cli import EXIT_USAGE, main

FIT = ["--model", "power_steps", "--bootstrap", "0", "-q", "--loss", "mse"]


def _log(path: Path, n: int = 60) -> Path:
    s = np.arange(n, dtype=float)
    Trajectory.from_arrays(0.5 + 2.0 / (1.0 + 0.1 * s), step=s, lr=np.full(n, 0.05)).write(path)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _lossrate(*argv: str, kill_after: int | None = None) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("LOSSRATE_KILL_AFTER_WRITES", None)
    if kill_after is not None:
        env["LOSSRATE_KILL_AFTER_WRITES"] = str(kill_after)
    code = "import sys; from lossrate.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stderr


def _restore(folder: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(folder)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _forked(*argv: str, kill_after: int | None = None) -> int:
    """``lossrate ARGV`` in a child process forked from this one (lossrate already imported,
    so each run takes a fraction of a second); its exit code, or -signal when killed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.environ.pop("LOSSRATE_KILL_AFTER_WRITES", None)
            if kill_after is not None:
                os.environ["LOSSRATE_KILL_AFTER_WRITES"] = str(kill_after)
            code = main(list(argv))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _complete_new(folder: Path, until: float) -> bool:
    manifest = json.loads((folder / MANIFEST).read_text())
    doc = json.loads((folder / "fit.json").read_text())
    return (
        doc["settings"]["until"] == until
        and all((folder / name).exists() for name in manifest["written"])
        and {"fit.json", "report.html", "trajectory.csv", "figures"} <= set(manifest["written"])
        and all((folder / f).is_file() for f in doc["figures"])
    )


def test_a_fit_killed_at_each_write_leaves_the_old_folder_or_the_new_one(tmp_path: Path) -> None:
    log = _log(tmp_path / "run.csv")
    out = tmp_path / "rep"
    assert _forked("fit", str(log), "--out", str(out), "--until", "0.5", *FIT) == 0
    old = _snapshot(out)
    outcomes = []
    for n in range(1, 15):
        rc = _forked("fit", str(log), "--out", str(out), "--until", "0.3", *FIT, kill_after=n)
        now = _snapshot(out)
        if now == old:
            outcomes.append("old")
        else:
            assert _complete_new(out, 0.3), f"kill after write {n}: a mixed folder {sorted(now)}"
            outcomes.append("new")
        if rc == 0:
            break
        assert rc == -signal.SIGKILL
        _restore(out, old)  # the old folder again, with what the killed run left beside it
    assert outcomes[0] == "old" and outcomes[-1] == "new" and rc == 0
    assert len(outcomes) >= 6  # each figure, the trajectory, fit.json, the page, the swap


def test_the_console_command_killed_mid_write_is_cleaned_up_by_the_next_run(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path / "run.csv")
    out = tmp_path / "rep"
    rc, err = _lossrate("fit", str(log), "--out", str(out), *FIT, kill_after=2)
    assert rc == -signal.SIGKILL, err
    assert not out.exists()  # never a half-written folder under its name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rep.tmp-")]
    assert _forked("fit", str(log), "--out", str(out), "--until", "0.5", *FIT) == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".rep.")]
    assert _complete_new(out, 0.5)


def test_a_kill_between_the_two_renames_is_undone_on_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    write_folder(out, lambda tmp: (tmp / "fit.json").write_text("{}"))
    before = _snapshot(out)
    out.rename(tmp_path / ".rep.old-123")  # the first rename of a swap, then the kill
    (tmp_path / ".rep.tmp-123").mkdir()
    clean_stale(out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_stale_temporaries_inside_the_folder_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    write_folder(out, lambda tmp: (tmp / "fit.json").write_text("{}"))
    (out / ".fit.json.abc123xy.tmp").write_text("half")
    (out / ".checkpoint.pt.q1w2e3r4.tmp").write_bytes(b"\0" * 100)
    write_folder(out, lambda tmp: (tmp / "fit.json").write_text("{}"))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "fit.json"]


def test_the_old_folder_keeps_what_the_report_does_not_write(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"weights")
    (out / "config.toml").write_text('name = "x"\n')
    write_folder(out, lambda tmp: (tmp / "fit.json").write_text("{}"))
    assert (out / "checkpoint.pt").read_bytes() == b"weights"
    assert (out / "config.toml").is_file() and (out / MANIFEST).is_file()


@pytest.fixture
def no_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any fitting work fails the test: refusals must come before it."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("fitting started before the output path was checked")

    monkeypatch.setattr("lossrate.report.analysis.analyze", boom)
    monkeypatch.setattr("lossrate.report.analysis.fit_prefix", boom)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["fit", "LOG", "--out", "."], "current folder"),
        (["fit", "LOG", "--out", "LOG"], "is a file"),
        (["fit", "LOG", "--out", "/dev/null"], "not a folder"),
        (["fit", "LOG", "--out", "USERDIR"], "did not write (notes.txt)"),
        (["fit", "TRAJDIR/trajectory.csv", "--out", "TRAJDIR"], "would overwrite"),
        (["predict", "LOG", "--csv", "USERDIR"], "--csv"),
        (["predict", "LOG", "--csv", "LOG"], "is the input log"),
        (["predict", "LOG", "--csv", "/dev/null"], "not a regular file"),
        (["predict", "TRAJDIR", "--csv", "TRAJDIR/trajectory.csv"], "is the input log"),
        (["fit", "LOG", "--save-prior", "USERDIR", "--prior", "USERDIR"], "--save-prior"),
        (["evaluate", "LOG", "--csv", "LOG"], "is the input log"),
    ],
)
def test_outputs_that_would_replace_inputs_are_refused_before_any_fit(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_fit: None,
    argv: list[str],
    says: str,
) -> None:
    log = _log(tmp_path / "run.csv")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    traj_dir = tmp_path / "recorded"
    traj_dir.mkdir()
    _log(traj_dir / "trajectory.csv")
    before = {**_snapshot(tmp_path)}
    names = {"LOG": str(log), "USERDIR": str(user), "TRAJDIR": str(traj_dir)}
    monkeypatch.chdir(tmp_path)
    args = [names.get(a, a) for a in argv]
    args = [a.replace("TRAJDIR", str(traj_dir)) for a in args]
    assert main([*args, "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_write_report_refuses_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match="current folder"):
        check_output_folder(Path("."), flag="run_dir")
