"""EnergyMeter: RAPL on a fake powercap tree, NVML and Zeus through fake modules, the estimate,
and the fallbacks with their reasons."""

from __future__ import annotations

import math
import subprocess
import sys
import types
from pathlib import Path

import pytest

from lossrate import InvalidArgumentError
from lossrate import energy as energy_mod
from lossrate.energy import DEFAULT_WATTS_PER_CORE, EnergyMeter


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{label}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


@pytest.fixture
def powercap(tmp_path):
    """Two packages with core and DRAM sub-zones, and a psys zone that contains them all."""
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 100_000)
    _zone(root, "intel-rapl:0:0", "core", 50_000)
    _zone(root, "intel-rapl:0:1", "dram", 10_000)
    _zone(root, "intel-rapl:1", "package-1", 200_000)
    _zone(root, "intel-rapl:2", "psys", 900_000)
    return root


def _set(root: Path, zone: str, value: int) -> None:
    (root / zone / "energy_uj").write_text(f"{value}\n")


@pytest.fixture
def no_zeus(monkeypatch):
    monkeypatch.setitem(sys.modules, "zeus", None)  # import fails even if zeus is installed
    monkeypatch.setitem(sys.modules, "zeus.monitor", None)


def test_rapl_sums_packages_and_dram_and_skips_psys_and_subzones(powercap, no_zeus):
    meter = EnergyMeter(powercap_root=powercap)
    assert meter.source == "rapl"
    assert "zeus" in meter.reason
    _set(powercap, "intel-rapl:0", 350_000)  # +250_000 uJ
    _set(powercap, "intel-rapl:0:0", 90_000)  # core: inside the package, not added
    _set(powercap, "intel-rapl:0:1", 30_000)  # dram: +20_000 uJ
    _set(powercap, "intel-rapl:1", 700_000)  # +500_000 uJ
    _set(powercap, "intel-rapl:2", 999_000)  # psys: not added
    assert meter.step_energy() == pytest.approx(0.77, rel=1e-12)
    assert meter.step_energy() == 0.0


def test_rapl_wrap_around(powercap, no_zeus):
    meter = EnergyMeter(prefer="rapl", powercap_root=powercap)
    _set(powercap, "intel-rapl:0", 40_000)  # wrapped at 1_000_000: +940_000 uJ
    assert meter.step_energy() == pytest.approx(0.94, rel=1e-12)
    _set(powercap, "intel-rapl:0", 60_000)
    assert meter.step_energy() == pytest.approx(0.02, rel=1e-12)


@pytest.mark.parametrize("breakage", ["directory", "garbage", "missing_max"])
def test_unreadable_rapl_falls_back_to_the_estimate_with_a_reason(powercap, no_zeus, breakage):
    target = powercap / "intel-rapl:1"
    if breakage == "directory":
        (target / "energy_uj").unlink()
        (target / "energy_uj").mkdir()
    elif breakage == "garbage":
        (target / "energy_uj").write_text("n/a\n")
    else:
        (target / "max_energy_range_uj").unlink()
    meter = EnergyMeter(powercap_root=powercap)
    assert meter.source == "estimate"
    assert "rapl: cannot read" in meter.reason and "intel-rapl:1" in meter.reason
    with pytest.raises(InvalidArgumentError, match="'rapl' is unavailable: cannot read"):
        EnergyMeter(prefer="rapl", powercap_root=powercap)


def test_permission_denied_says_how_to_fix(powercap, no_zeus, monkeypatch):
    real = Path.read_text

    def deny(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)
    meter = EnergyMeter(powercap_root=powercap)
    assert meter.source == "estimate" and "chmod a+r" in meter.reason


def test_a_counter_failing_later_gives_nan_and_a_reason(powercap, no_zeus):
    meter = EnergyMeter(powercap_root=powercap)
    (powercap / "intel-rapl:0" / "energy_uj").write_text("gone\n")
    assert math.isnan(meter.step_energy())
    assert "rapl reading failed" in meter.reason


def test_missing_powercap_root(tmp_path, no_zeus):
    meter = EnergyMeter(powercap_root=tmp_path / "nowhere")
    assert meter.source == "estimate" and "does not exist" in meter.reason
    (tmp_path / "empty").mkdir()
    assert "no intel-rapl" in EnergyMeter(powercap_root=tmp_path / "empty").reason


def test_estimate_is_process_cpu_time_times_watts(tmp_path, no_zeus, monkeypatch):
    assert EnergyMeter(prefer="estimate").watts_per_core == DEFAULT_WATTS_PER_CORE
    with pytest.raises(InvalidArgumentError, match="watts_per_core"):
        EnergyMeter(watts_per_core=0)
    clock = iter([10.0, 12.5, 13.0])
    monkeypatch.setattr(energy_mod.time, "process_time", lambda: next(clock))
    meter = EnergyMeter(prefer="estimate", watts_per_core=20.0)
    assert meter.source == "estimate"
    assert meter.step_energy() == pytest.approx(50.0)
    assert meter.step_energy() == pytest.approx(10.0)


class _FakeNvml(types.ModuleType):
    """The part of pynvml the meter uses: a mJ counter per device."""

    class NVMLError(Exception):
        pass

    def __init__(self, counters, uuids=()):
        super().__init__("pynvml")
        self.counters = counters
        self.uuids = dict(uuids)
        self.shutdown = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetHandleByIndex(self, i):
        if i >= len(self.counters):
            raise self.NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self.uuids[uuid]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.counters[handle]


def test_nvml_plus_rapl(powercap, no_zeus, monkeypatch):
    fake = _FakeNvml([1000, 5000, 9000])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # torch's cuda:0 is physical GPU 2
    meter = EnergyMeter(gpu_indices=[0], powercap_root=powercap)
    assert meter.source == "nvml+rapl"
    fake.counters[2] += 3000  # +3 J on the used GPU
    fake.counters[1] += 7000  # an unused GPU
    _set(powercap, "intel-rapl:1", 300_000)  # +0.1 J
    assert meter.step_energy() == pytest.approx(3.1, rel=1e-12)
    meter.close()
    assert fake.shutdown


def test_nvml_by_uuid_and_errors(no_zeus, tmp_path, monkeypatch):
    fake = _FakeNvml([0, 0], uuids={"GPU-abc": 1})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    meter = EnergyMeter(gpu_indices=[0], prefer="nvml")
    fake.counters[1] = 2500
    assert meter.source == "nvml" and meter.step_energy() == pytest.approx(2.5)
    with pytest.raises(InvalidArgumentError, match="not among CUDA_VISIBLE_DEVICES"):
        EnergyMeter(gpu_indices=[1], prefer="nvml")
    with pytest.raises(InvalidArgumentError, match="needs gpu_indices"):
        EnergyMeter(prefer="nvml")


def test_gpus_without_nvml_are_reported(no_zeus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    meter = EnergyMeter(gpu_indices=[0], powercap_root=tmp_path)
    assert meter.source == "estimate"
    assert "nvidia-ml-py" in meter.reason and "GPUs' energy is not counted" in meter.reason


def _fake_zeus(monkeypatch, gpus, cpus, joules=(4.0, 6.0)):
    readings = iter(joules)
    windows = []

    class Measurement:
        def __init__(self, total):
            self.total_energy = total

    class ZeusMonitor:
        def __init__(self, gpu_indices=None):
            self.gpu_indices = gpus
            self.cpu_indices = cpus

        def begin_window(self, name):
            windows.append(("begin", name))

        def end_window(self, name):
            windows.append(("end", name))
            return Measurement(next(readings))

    zeus = types.ModuleType("zeus")
    monitor = types.ModuleType("zeus.monitor")
    monitor.ZeusMonitor = ZeusMonitor
    zeus.monitor = monitor
    monkeypatch.setitem(sys.modules, "zeus", zeus)
    monkeypatch.setitem(sys.modules, "zeus.monitor", monitor)
    return windows


def test_zeus_is_preferred_and_read_per_window(powercap, monkeypatch):
    windows = _fake_zeus(monkeypatch, gpus=[0], cpus=[0])
    meter = EnergyMeter(gpu_indices=[0], powercap_root=powercap)
    assert meter.source == "zeus" and meter.reason == ""
    assert meter.step_energy() == 4.0 and meter.step_energy() == 6.0
    assert [w[0] for w in windows] == ["begin", "end", "begin", "end", "begin"]


def test_zeus_without_devices_is_skipped(powercap, monkeypatch):
    _fake_zeus(monkeypatch, gpus=[], cpus=[])
    meter = EnergyMeter(powercap_root=powercap)
    assert meter.source == "rapl" and "zeus found no GPU or CPU" in meter.reason


def test_bad_prefer():
    with pytest.raises(InvalidArgumentError, match="prefer"):
        EnergyMeter(prefer="wattmeter")


def test_the_energy_module_does_not_import_torch():
    code = "import sys, lossrate.energy, lossrate.measured; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
