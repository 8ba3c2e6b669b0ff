"""Joining or starting Ray for the paths that distribute work on it (sweeps, evaluate).

Ray is imported only here and only when called: ``import lossrate`` stays numpy/scipy.

An address where nothing listens is refused before ``ray.init`` sees it: Ray's own join
retries the GCS for minutes (more than five on Ray 2.60 with ``127.0.0.1:1``), so a TCP
connection to the address's host and port is tried first, for at most
:data:`PROBE_TIMEOUT_S` seconds.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["PROBE_TIMEOUT_S", "ray_session"]

#: seconds the probe of a cluster address waits for a TCP connection
PROBE_TIMEOUT_S = 5.0

_START_FIX = (
    "start Ray there first (`ray start --head --port 6379` on the head node), check the host "
    "and the port (HOST:6379, or ray://HOST:10001 for the Ray client)"
)


@contextmanager
def ray_session(
    address: str | None, workers: int | None, say: Callable[[str], None], what: str
) -> Iterator[Any]:
    """The ``ray`` module, initialised: the cluster at ``address`` (or ``RAY_ADDRESS``), else
    a new local Ray of this process with ``workers`` CPUs (never a cluster found on the
    machine: pass ``address="auto"`` for one started with ``ray start``). A Ray started here
    is shut down on exit; one already initialised is used as it is. ``what`` names the work
    in the line said when Ray starts (e.g. "6 runs").

    Raises:
        InvalidArgumentError: Ray is not installed; nothing answers at the address (within
            :data:`PROBE_TIMEOUT_S` seconds) or Ray cannot join the cluster there.
    """
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
            arg, flag = (
                ("address", "--address")
                if address
                else ("the environment variable RAY_ADDRESS", "RAY_ADDRESS")
            )
            _probe(kwargs["address"], arg, flag)
        else:
            kwargs["address"] = "local"
            kwargs["num_cpus"] = workers or os.cpu_count() or 1
            kwargs["include_dashboard"] = False
            where = f"a local Ray with {kwargs['num_cpus']} worker CPU(s)"
            arg = flag = ""
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            fix = (
                "Check that `ray start --head` runs there and the address (HOST:6379, or "
                "ray://HOST:10001); a cluster with token authentication needs its token here "
                "too (RAY_AUTH_MODE=token and ~/.ray/auth_token or $RAY_AUTH_TOKEN)."
            )
            value = repr(kwargs["address"])
            raise InvalidArgumentError(
                f"{arg or 'address'}={value}: cannot join {where}: {exc}. {fix} Without an "
                "address the work goes to a local Ray.",
                cli=f"{flag or '--address'} {value}: cannot join {where}: {exc}. {fix} Without "
                "--address the work goes to a local Ray.",
            ) from None
        started_here = True
        say(f"running {what} on {where}")
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _probe(address: str, arg: str, flag: str) -> None:
    """Refuse ``address`` unless something accepts a TCP connection at its host and port
    ("local" is not probed; "auto" is probed where Ray finds the address it stands for)."""
    if address == "local":
        return
    target = address
    if address == "auto":
        try:  # the address `ray start` left on this machine (Ray's own lookup)
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # nothing found, or Ray moved it: ray.init says why itself
            return
        if not target:
            return
    host, sep, port = target.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    value = repr(address)
    if not sep or not host or not port.isdigit():
        raise InvalidArgumentError(
            f"{arg}={value} is not a Ray address; give HOST:PORT (e.g. 10.0.0.5:6379), "
            "ray://HOST:10001, 'auto' (a Ray started with `ray start` on this machine) or "
            "'local'.",
            cli=f"{flag} {value} is not a Ray address; give HOST:PORT (e.g. 10.0.0.5:6379), "
            "ray://HOST:10001, auto (a Ray started with `ray start` on this machine) or local.",
        )
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = (
            f"no answer within {PROBE_TIMEOUT_S:g} s"
            if isinstance(exc, TimeoutError)
            else (exc.strerror or str(exc)).lower()
        )
        where = f"{host}:{port}" + ("" if target == address else f", the address of {address!r}")
        leave = (
            "or unset RAY_ADDRESS to run on a local Ray"
            if flag == "RAY_ADDRESS"
            else "or leave out the address to run on a local Ray"
        )
        raise InvalidArgumentError(
            f"{arg}={value}: nothing answers at {where} ({reason}); {_START_FIX}, {leave}.",
            cli=f"{flag} {value}: nothing answers at {where} ({reason}); {_START_FIX}, "
            + (leave if flag == "RAY_ADDRESS" else "or leave out --address to run on a local Ray")
            + ".",
        ) from None
