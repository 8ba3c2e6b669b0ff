"""Reader of the Multi-Power-Law loss curves (Luo et al. 2025, arXiv 2503.12811, MIT).

The folder holds ``{25M,100M,400M}/<schedule>.csv`` with columns ``step,lr,loss``, one
row every 128 steps after warmup. The ``lr`` column is the rate at the logged step only,
so the learning rate of *every* step is rebuilt here from the schedule's description:

* warmup: eta_k = peak k / (w - 1) for k < w = 2160 (``linspace(0, peak, w)``), so the
  warmup contributes S(w) = w peak / 2 = 0.324 exactly, the README's figure. The logged
  rows start after warmup (step 2160 or 2176), so the data cannot tell this rule from
  peak (k + 1) / w (S = 0.32415) or peak k / w (0.32385); the README's 0.324 and the
  authors' own loader both give linspace;
* after warmup (peak 3e-4, final 3e-5), u the fraction of the phase done:
  ``constant_N`` constant; ``cosine_N`` final + (peak - final)(1 + cos(pi u))/2 over
  [w, N); ``wsd_D_N`` constant until D, then peak^(1-u) final^u; ``wsdld_D_N`` the same
  with a linear decay; ``wsdcon_M`` peak until 8000, then M * 1e-5 until 16000.

Every rebuilt rate is checked against the logged ``lr`` column (relative 1e-9, observed
agreement ~1e-16), so a renamed or altered file is an error, not a silent mismatch.
Rows at or beyond the schedule's last step are dropped (the paper cuts its 24000-step
files to steps < 24000), and t = S(step) = sum_{j<step} eta_j is exact.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .._errors import DataError, InvalidArgumentError
from ..schedule import Schedule
from ..trajectory import RunMeta, Trajectory

__all__ = [
    "MPL_FIT",
    "MPL_PREDICT",
    "MPL_SIZES",
    "default_mpl_root",
    "load_mpl",
    "load_mpl_all",
    "mpl_schedule",
    "mpl_split",
]

#: model sizes (folder names) in the published data
MPL_SIZES = ("25M", "100M", "400M")
#: the paper's fitting curves and the curves it predicts (one parameter set per size)
MPL_FIT = ("cosine_24000", "constant_24000", "wsdcon_9")
MPL_PREDICT = (
    "constant_72000",
    "cosine_72000",
    "wsd_20000_24000",
    "wsdld_20000_24000",
    "wsdcon_3",
    "wsdcon_18",
)
PEAK_LR = 3e-4
FINAL_LR = 3e-5
WARMUP = 2160
_WSDCON_SWITCH, _WSDCON_END, _WSDCON_UNIT = 8000, 16000, 1e-5
_LR_RTOL = 1e-9
_ENV = "LOSSRATE_MPL_DIR"


def mpl_split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The paper's (fit, predict) schedule names."""
    return MPL_FIT, MPL_PREDICT


def default_mpl_root() -> Path:
    """``$LOSSRATE_MPL_DIR``, else ``<repo>/../shared/data/mpl`` when that folder exists."""
    env = os.environ.get(_ENV)
    if env:
        root = Path(env)
        if not root.is_dir():
            raise DataError(f"{_ENV}={env!r} is not a folder; point it at the mpl data folder.")
        return root
    repo = Path(__file__).resolve().parents[3]
    candidate = repo.parent / "shared" / "data" / "mpl"
    if candidate.is_dir():
        return candidate
    raise DataError(
        "the Multi-Power-Law data folder was not found; pass root=<folder holding 25M/, 100M/, "
        f"400M/> or set {_ENV}. The curves are in the repository thu-yao-01-luo/MultiPowerLaw."
    )


def mpl_schedule(schedule_name: str) -> Schedule:
    """The per-step learning rates of one of the published schedules (module docstring)."""
    m = re.fullmatch(r"(constant|cosine)_(\d+)|(wsd|wsdld)_(\d+)_(\d+)|wsdcon_(\d+)", schedule_name)
    if m is None:
        raise InvalidArgumentError(
            f"schedule_name={schedule_name!r} is not an mpl schedule; use a file stem such as "
            f"{', '.join(MPL_FIT + MPL_PREDICT)}."
        )
    if m.group(1):
        sched = Schedule.make(
            m.group(1), peak=PEAK_LR, n_steps=int(m.group(2)), warmup=WARMUP, final=FINAL_LR
        )
    elif m.group(3):
        sched = Schedule.make(
            "wsd",
            peak=PEAK_LR,
            n_steps=int(m.group(5)),
            warmup=WARMUP,
            final=FINAL_LR,
            decay_start=int(m.group(4)),
            decay="geometric" if m.group(3) == "wsd" else "linear",
        )
    else:
        sched = Schedule.make(
            "step",
            peak=PEAK_LR,
            n_steps=_WSDCON_END,
            warmup=WARMUP,
            milestones=[_WSDCON_SWITCH],
            factor=int(m.group(6)) * _WSDCON_UNIT / PEAK_LR,
        )
    lr = sched.lr.copy()
    lr[:WARMUP] = np.linspace(0.0, PEAK_LR, WARMUP)
    return Schedule(lr, schedule_name)


def _size_value(size: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMB])", size)
    if m is None:
        raise InvalidArgumentError(
            f"size={size!r} is not a model size folder; use one of {MPL_SIZES}."
        )
    return float(m.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9}[m.group(2)]


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline().strip()
            if header != "step,lr,loss":
                raise DataError(f"{str(path)!r}: header is {header!r}, expected 'step,lr,loss'.")
            data = np.loadtxt(f, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise DataError(f"{str(path)!r}: a row is not three numbers ({exc}).") from None
    if data.shape[0] == 0 or data.shape[1] != 3:
        raise DataError(f"{str(path)!r}: expected rows of step,lr,loss, got shape {data.shape}.")
    return data[:, 0], data[:, 1], data[:, 2]


def load_mpl(
    root: str | os.PathLike[str] | None, size: str, schedule_name: str
) -> tuple[Trajectory, Schedule]:
    """One published curve as a :class:`Trajectory` and its exact per-step :class:`Schedule`.

    Args:
        root: the data folder (``None``: :func:`default_mpl_root`).
        size: "25M", "100M" or "400M".
        schedule_name: a file stem, e.g. "wsd_20000_24000".

    Raises:
        DataError: missing file, malformed rows, or a logged lr that the rebuilt schedule
            does not reproduce.
    """
    folder = default_mpl_root() if root is None else Path(root)
    path = folder / size / f"{schedule_name}.csv"
    model_size = _size_value(size)
    schedule = mpl_schedule(schedule_name)
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist; check root={str(folder)!r} and the names.")
    step, lr, loss = _read_csv(path)
    keep = step < schedule.n_steps
    if not keep.any():
        raise DataError(f"{str(path)!r}: no row lies inside the {schedule.n_steps}-step schedule.")
    step, lr, loss = step[keep], lr[keep], loss[keep]
    if np.any(step != np.round(step)) or np.any(step < 0):
        raise DataError(f"{str(path)!r}: column 'step' must hold whole numbers >= 0.")
    rebuilt = schedule.at(step.astype(np.int64))
    bad = np.abs(rebuilt - lr) > _LR_RTOL * np.abs(lr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{str(path)!r}: logged lr {lr[i]!r} at step {int(step[i])} differs from the "
            f"{schedule_name!r} schedule's {rebuilt[i]!r}; is the file named after its schedule?"
        )
    meta = RunMeta(
        loss="ce",
        schedule=schedule_name,
        peak_lr=PEAK_LR,
        model_size=model_size,
        name=f"{size}/{schedule_name}",
        extra={"source": "Multi-Power Law data (Luo et al. 2025, MIT)"},
    )
    traj = Trajectory.from_arrays(loss, step=step, lr=lr, t=schedule.S(step), meta=meta)
    return traj, schedule


def load_mpl_all(
    root: str | os.PathLike[str] | None = None, *, sizes: tuple[str, ...] = MPL_SIZES
) -> list[tuple[Trajectory, Schedule]]:
    """Every curve of ``sizes``, in the order size, then :data:`MPL_FIT` + :data:`MPL_PREDICT`."""
    return [load_mpl(root, size, name) for size in sizes for name in MPL_FIT + MPL_PREDICT]
