"""Joining or starting Ray for the paths that distribute work on it (sweeps, evaluate).

Ray is imported only here and only when called: ``import lossrate`` stays numpy/scipy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["ray_session"]


@contextmanager
def ray_session(
    address: str | None, workers: int | None, say: Callable[[str], None], what: str
) -> Iterator[Any]:
    """The ``ray`` module, initialised: the cluster at ``address`` (or ``RAY_ADDRESS``), else
    a new local Ray of this process with ``workers`` CPUs (never a cluster found on the
    machine: pass ``address="auto"`` for one started with ``ray start``). A Ray started here
    is shut down on exit; one already initialised is used as it is. ``what`` names the work
    in the line said when Ray starts (e.g. "6 runs")."""
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError(
            f"running {what} on Ray needs Ray: pip install 'lossrate[ray]' (or run them "
            "without an address).",
            cli=f"--address runs {what} on Ray, which is not installed: pip install "
            "'lossrate[ray]', or leave out --address.",
        ) from None

    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if address or os.environ.get("RAY_ADDRESS"):
            kwargs["address"] = address or os.environ["RAY_ADDRESS"]
            where = f"the Ray cluster at {kwargs['address']}"
        else:
            kwargs["address"] = "local"
            kwargs["num_cpus"] = workers or os.cpu_count() or 1
            kwargs["include_dashboard"] = False
            where = f"a local Ray with {kwargs['num_cpus']} worker CPU(s)"
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise InvalidArgumentError(
                f"cannot join {where}: {exc}. Check that `ray start --head` runs there and the "
                "address (HOST:6379, or ray://HOST:10001); a cluster with token authentication "
                "needs its token here too (RAY_AUTH_MODE=token and ~/.ray/auth_token or "
                "$RAY_AUTH_TOKEN). Without --address the work goes to a local Ray."
            ) from None
        started_here = True
        say(f"running {what} on {where}")
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()
