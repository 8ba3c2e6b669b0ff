"""Foreign training logs -> :class:`~lossrate.Trajectory`.

:func:`read_log` detects the format and dispatches; the per-format readers take the
same options:

* :func:`read_csv` — a CSV/TSV table (columns recognised by name, or ``columns=``);
* :func:`read_tensorboard` — a TensorBoard run folder or event file;
* :func:`read_wandb` — a W&B history export (JSON lines, JSON, CSV);
* :func:`read_lightning` — a PyTorch Lightning ``CSVLogger`` run;

Every reader is read-only and bounded (``max_bytes``, default 64 MiB), sorts rows by
step, merges rows logged at one step (``dedupe='last'``, or ``'error'``), and raises
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
from .tensorboard import read_tensorboard as read_tensorboard
from .wandb import read_wandb as read_wandb

__all__ = [
    "CANDIDATES",
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "ROLES",
    "detect_format",
    "read_csv",
    "read_lightning",
    "read_log",
    "read_tensorboard",
    "read_wandb",
]
