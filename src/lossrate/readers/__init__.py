"""Foreign training logs -> :class:`~lossrate.Trajectory`.

:func:`read_log` detects the format and dispatches; the per-format readers take the
same options:

* :func:`read_csv` — a CSV/TSV table (columns recognised by name, or ``columns=``);
* :func:`read_tensorboard` — a TensorBoard run folder or event file;
* :func:`read_wandb` — a W&B history export (JSON lines, JSON, CSV);
* :func:`read_lightning` — a PyTorch Lightning ``CSVLogger`` run;
* :func:`load_mpl` — the Multi-Power-Law LLM curves, with their schedules rebuilt.

Every reader is read-only and bounded (``max_bytes``: default 2 GiB for a CSV, whose rows
are parsed in blocks, and 64 MiB for the formats read whole), sorts rows by step, merges
rows logged at one step (``dedupe='last'``, or ``'error'``), bins a log longer than
``max_points`` rows (default 20,000; None keeps every row) by step, and raises
:class:`~lossrate.DataError` naming the file, the problem and the fix for any
malformed input (:class:`~lossrate.InvalidArgumentError` for a bad argument).

Example::

    from lossrate.readers import read_log
    traj = read_log("lightning_logs/version_3", meta=RunMeta(loss="ce", classes=10))
"""

from ._build import CANDIDATES as CANDIDATES
from ._build import ROLES as ROLES
from ._dispatch import FORMATS as FORMATS
from ._dispatch import detect_format as detect_format
from ._dispatch import read_log as read_log
from ._files import DEFAULT_MAX_BYTES as DEFAULT_MAX_BYTES
from .csv import read_csv as read_csv
from .lightning import read_lightning as read_lightning
from .mpl import MPL_FIT as MPL_FIT
from .mpl import MPL_PREDICT as MPL_PREDICT
from .mpl import MPL_SIZES as MPL_SIZES
from .mpl import default_mpl_root as default_mpl_root
from .mpl import load_mpl as load_mpl
from .mpl import load_mpl_all as load_mpl_all
from .mpl import mpl_schedule as mpl_schedule
from .mpl import mpl_split as mpl_split
from .tensorboard import read_tensorboard as read_tensorboard
from .wandb import read_wandb as read_wandb

__all__ = [
    "CANDIDATES",
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "MPL_FIT",
    "MPL_PREDICT",
    "MPL_SIZES",
    "ROLES",
    "default_mpl_root",
    "detect_format",
    "load_mpl",
    "load_mpl_all",
    "mpl_schedule",
    "mpl_split",
    "read_csv",
    "read_lightning",
    "read_log",
    "read_tensorboard",
    "read_wandb",
]
