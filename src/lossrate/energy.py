"""Energy meters: joules per training step, from the best source this machine offers.

``meter = EnergyMeter(gpu_indices=[0])`` probes, in order, and keeps the first that works:

1. **zeus** — Zeus's ``ZeusMonitor`` (``pip install zeus``; optional, not installed by
   default). It measures arbitrary windows (GPU via NVML, CPU/DRAM via RAPL) with < 10 ms
   overhead per call, which is what a per-step meter needs.
2. **rapl** and/or **nvml** — the hardware energy counters read directly: Linux powercap
   RAPL (CPU packages and DRAM, ``<powercap_root>/intel-rapl:*/energy_uj``, wrap-around at
   ``max_energy_range_uj`` handled) and, when GPUs are used, NVML's total-energy counter
   (``nvidia-ml-py``, Volta or newer). Both together give source "nvml+rapl".
3. **estimate** — process CPU time x ``watts_per_core`` (default
   :data:`DEFAULT_WATTS_PER_CORE` = 10 W per busy core, an order of magnitude for current
   server and desktop cores: 250 W / 32 cores ~ 8 W; change it for your machine). Labelled
   "estimate" everywhere (with GPUs and no NVML: "nvml" is missing and the GPU's energy is not
   counted, which ``reason`` says).

CodeCarbon was considered and not used: it samples power every ~15 s and is built to report
CO2 totals of whole runs, not energy per optimizer step.

``meter.source`` (store it in ``RunMeta.energy_source``) names what was used and
``meter.reason`` says why earlier choices were skipped (file, error, fix). RAPL and NVML
count the whole CPU package / GPU, including other processes on them. A counter that fails
after start-up makes ``step_energy`` return NaN (and says why in ``reason``): never a
silent constant.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._errors import InvalidArgumentError, check_choice, check_positive

__all__ = ["DEFAULT_POWERCAP_ROOT", "DEFAULT_WATTS_PER_CORE", "EnergyMeter", "SourceUnavailable"]

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
#: Watts per busy CPU core assumed by the "estimate" source.
DEFAULT_WATTS_PER_CORE = 10.0
_PREFER = ("auto", "zeus", "rapl", "nvml", "estimate")


class SourceUnavailable(Exception):
    """A meter source cannot be used here (the message says why)."""


class _Counter:
    """One energy source: ``read()`` -> joules since the previous read."""

    name = ""

    def read(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (default: nothing)."""


class _Zeus(_Counter):
    name = "zeus"
    _WINDOW = "lossrate.step"

    def __init__(self, gpu_indices: Sequence[int]) -> None:
        try:
            from zeus.monitor import ZeusMonitor
        except ImportError as exc:
            raise SourceUnavailable(f"zeus is not installed ({exc}); `pip install zeus`") from None
        try:
            self.monitor = ZeusMonitor(gpu_indices=list(gpu_indices))
        except Exception as exc:  # zeus raises its own types for missing devices
            raise SourceUnavailable(f"ZeusMonitor failed: {exc}") from None
        gpus = list(getattr(self.monitor, "gpu_indices", []) or [])
        cpus = list(getattr(self.monitor, "cpu_indices", []) or [])
        if not gpus and not cpus:
            raise SourceUnavailable("zeus found no GPU or CPU energy counter to read")
        self.monitor.begin_window(self._WINDOW)

    def read(self) -> float:
        measurement = self.monitor.end_window(self._WINDOW)
        self.monitor.begin_window(self._WINDOW)
        return float(measurement.total_energy)


class _Rapl(_Counter):
    """Sum of the RAPL package zones (not "psys", which contains them) and DRAM sub-zones."""

    name = "rapl"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        base = Path(root)
        if not base.is_dir():
            raise SourceUnavailable(f"{str(base)!r} does not exist (no powercap RAPL here)")
        self.zones: list[tuple[Path, int]] = []
        for zone in sorted(base.glob("intel-rapl:*")):
            depth = zone.name.count(":")
            name = _read_text(zone / "name", default="package" if depth == 1 else "")
            if (depth == 1 and not name.startswith("psys")) or (depth == 2 and name == "dram"):
                try:
                    self.zones.append(
                        (zone / "energy_uj", int(_read_text(zone / "max_energy_range_uj")))
                    )
                except (OSError, ValueError) as exc:
                    raise SourceUnavailable(
                        _unreadable(zone / "max_energy_range_uj", exc)
                    ) from None
        if not self.zones:
            raise SourceUnavailable(f"{str(base)!r} has no intel-rapl package zones")
        self.last = [self._read_uj(path) for path, _ in self.zones]

    @staticmethod
    def _read_uj(path: Path) -> int:
        try:
            return int(_read_text(path))
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(_unreadable(path, exc)) from None

    def read(self) -> float:
        now = [self._read_uj(path) for path, _ in self.zones]
        total = 0
        for (_, wrap), a, b in zip(self.zones, self.last, now):
            total += b - a if b >= a else b - a + wrap
        self.last = now
        return total * 1e-6


class _Nvml(_Counter):
    name = "nvml"

    def __init__(self, gpu_indices: Sequence[int]) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise SourceUnavailable(
                f"pynvml is not installed ({exc}); `pip install nvidia-ml-py`"
            ) from None
        self.nvml = pynvml
        try:
            pynvml.nvmlInit()
            self.handles = [_nvml_handle(pynvml, i) for i in gpu_indices]
            self.last = [self._read_mj(h) for h in self.handles]
        except pynvml.NVMLError as exc:
            raise SourceUnavailable(f"NVML failed: {exc}") from None

    def _read_mj(self, handle: Any) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def read(self) -> float:
        try:
            now = [self._read_mj(h) for h in self.handles]
        except self.nvml.NVMLError as exc:
            raise SourceUnavailable(f"NVML failed: {exc}") from None
        total = sum(b - a for a, b in zip(self.last, now))
        self.last = now
        return total * 1e-3

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


class _Estimate(_Counter):
    name = "estimate"

    def __init__(self, watts_per_core: float) -> None:
        self.watts = watts_per_core
        self.last = time.process_time()

    def read(self) -> float:
        now = time.process_time()
        joules = (now - self.last) * self.watts
        self.last = now
        return joules


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """NVML handle of torch's CUDA device ``index`` (CUDA_VISIBLE_DEVICES renumbers devices)."""
    visible = [
        v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()
    ]
    if not visible:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    if index >= len(visible):
        raise SourceUnavailable(
            f"GPU index {index} is not among CUDA_VISIBLE_DEVICES={','.join(visible)}"
        )
    dev = visible[index]
    if dev.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(dev))
    return pynvml.nvmlDeviceGetHandleByUUID(dev)


def _read_text(path: Path, default: str | None = None) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        if default is None:
            raise
        return default


def _unreadable(path: Path, exc: BaseException) -> str:
    fix = ""
    if isinstance(exc, PermissionError):
        fix = " (root-only since Linux 5.10: run as root or `sudo chmod a+r` the energy_uj files)"
    return f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}{fix}"


class EnergyMeter:
    """Joules per training step from the best available source (see the module docstring).

    Args:
        gpu_indices: CUDA device indices the training uses (torch numbering); their energy is
            measured with NVML (or Zeus). None or empty: no GPU.
        prefer: "auto" (probe in order and fall back), or one of "zeus", "rapl", "nvml",
            "estimate" to require that source (an error says why it is unavailable).
        powercap_root: where the RAPL zones live.
        watts_per_core: the "estimate" source's power per busy core, in watts.

    Attributes:
        source: what measures the energy: "zeus", "rapl", "nvml", "nvml+rapl",
            "nvml+estimate" or "estimate". Put it in ``RunMeta.energy_source``.
        reason: why preferred sources were skipped, or why a reading failed; "" if neither.
    """

    def __init__(
        self,
        *,
        gpu_indices: Sequence[int] | None = None,
        prefer: str = "auto",
        powercap_root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
    ) -> None:
        prefer = check_choice("prefer", prefer, _PREFER)
        self.watts_per_core = check_positive("watts_per_core", watts_per_core)
        gpus = [int(i) for i in (gpu_indices or [])]
        if prefer == "nvml" and not gpus:
            raise InvalidArgumentError("prefer='nvml' needs gpu_indices, e.g. gpu_indices=[0].")
        makers = {
            "zeus": lambda: _Zeus(gpus),
            "nvml": lambda: _Nvml(gpus),
            "rapl": lambda: _Rapl(powercap_root),
            "estimate": lambda: _Estimate(self.watts_per_core),
        }
        skipped: list[str] = []

        def attempt(name: str) -> list[_Counter]:
            try:
                return [makers[name]()]
            except SourceUnavailable as exc:
                if prefer == name:
                    raise InvalidArgumentError(
                        f"energy source {name!r} is unavailable: {exc}."
                    ) from None
                skipped.append(f"{name}: {exc}")
                return []

        if prefer != "auto":
            counters = attempt(prefer)
        else:
            counters = attempt("zeus")
            if not counters:
                gpu = attempt("nvml") if gpus else []
                if gpus and not gpu:
                    skipped.append("the GPUs' energy is not counted")
                counters = gpu + (attempt("rapl") or attempt("estimate"))
        self._counters = counters
        self.source = "+".join(c.name for c in counters)
        self.reason = "; ".join(skipped)

    def step_energy(self) -> float:
        """Joules used since the previous call (since construction for the first call);
        NaN when a counter failed (``reason`` says why)."""
        total = 0.0
        for counter in self._counters:
            try:
                total += counter.read()
            except (SourceUnavailable, OSError) as exc:
                self.reason = f"{counter.name} reading failed: {exc}"
                total = float("nan")
        return total

    def close(self) -> None:
        """Release the counters (NVML)."""
        for counter in self._counters:
            counter.close()

    def __repr__(self) -> str:
        extra = f", reason={self.reason!r}" if self.reason else ""
        return f"EnergyMeter(source={self.source!r}{extra})"
