"""The package surface: light imports and the public verbs."""

from __future__ import annotations

import subprocess
import sys

import lossrate


def test_core_import_pulls_no_torch_or_plotting() -> None:
    code = (
        "import sys, lossrate\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'matplotlib', 'pandas', 'tensorboard', 'transformers'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_verbs_are_reexported() -> None:
    for name in (
        "solve",
        "solve_ode",
        "fit",
        "fit_many",
        "predict",
        "floor",
        "time_to_target",
        "steps_to_target",
        "energy_to_target",
        "certified_lower_bound",
        "evaluate",
        "read_log",
        "Trajectory",
        "Schedule",
        "Prior",
    ):
        assert callable(getattr(lossrate, name)), name
