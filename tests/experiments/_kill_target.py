"""Child process of ``test_kill_resume.py``: run (or resume) one experiment, optionally
killing itself with SIGKILL at an exact point.

    python _kill_target.py CONFIG_TOML RUN_DIR [--sleep SECONDS] [--die WHERE:STEP]

It calls ``run_experiment(CONFIG_TOML, RUN_DIR, resume=True, device="cpu")`` on one torch
thread. ``--sleep`` waits before every trajectory row is logged (outside the measured
step, so no number changes), which gives the parent time to kill the run at a random step.
``--die`` sends SIGKILL to this process

* ``step:N``  when step N is about to be logged (its update is done, the row not recorded);
* ``flush:N`` after the rows of steps < N were flushed for the checkpoint at step N, before
  that checkpoint is written;
* ``ckpt:N``  inside the checkpoint write at step N: the temporary file is complete but not
  yet renamed over ``checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("run_dir")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--die", default="")
    args = parser.parse_args()
    where, _, at = args.die.partition(":")
    die_at = int(at) if at else -1

    import torch

    torch.set_num_threads(1)
    from lossrate.experiments import run_experiment
    from lossrate.experiments import train as train_module
    from lossrate.torch.recorder import Recorder

    real_log, real_save_checkpoint, real_torch_save = (
        Recorder.log,
        train_module.save_checkpoint,
        torch.save,
    )

    def log(self: Recorder, **kwargs: Any) -> None:
        if where == "step" and kwargs["step"] == die_at:
            _die()
        if args.sleep:
            time.sleep(args.sleep)
        real_log(self, **kwargs)

    def save_checkpoint(run_dir: Any, ck: Any) -> Any:
        if where == "flush" and ck.step == die_at:
            _die()
        return real_save_checkpoint(run_dir, ck)

    def torch_save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
        real_torch_save(obj, f, *a, **kw)
        if where == "ckpt" and isinstance(obj, dict) and obj.get("step") == die_at:
            f.flush()
            os.fsync(f.fileno())
            _die()

    Recorder.log = log  # type: ignore[method-assign]
    train_module.save_checkpoint = save_checkpoint  # type: ignore[assignment]
    torch.save = torch_save  # type: ignore[assignment]
    run_experiment(args.config, args.run_dir, resume=True, device="cpu", progress=False)


if __name__ == "__main__":
    main()
