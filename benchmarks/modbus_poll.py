"""Modbus poll benchmark: one full telemetry cycle of a large site over real loopback sockets.

    python -m benchmarks.modbus_poll [--cycles N] [--pdus N] [--outlets N] [--ups N] [--json]

The site (default 20 PDUs x 24 outlets plus 2 UPS units, a service on every outlet) runs in a
separate `python -m simulator run` process, each device on its own Modbus TCP server. In this
process the project's `ModbusDriver` reads every device once per cycle (devices concurrently,
adjacent registers grouped). The baseline, measured in the same run and interleaved with it, polls
the same devices one after another with the same grouped requests over their own warm connections.
Reported: median and 95th percentile of a cycle in ms, the ratio of the two medians
(concurrent / one after another: below 1 is faster), requests per cycle, and any device that was
unavailable in any measured cycle (the figures count only if that is zero).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from custom_components.power_allocation.drivers.modbus import ModbusDevice, ModbusDriver
from custom_components.power_allocation.drivers.native_stdout import keep_stdout_for_python
from custom_components.power_allocation.drivers.profile import load_profile

HOST = "127.0.0.1"
TARGET_MS = 250.0
WARMUP_CYCLES = 3
STARTUP_TIMEOUT_S = 120.0
DEVICE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ModbusPollBenchmark:
    """One run's figures."""

    ups_units: int
    pdus: int
    outlets: int
    requests_per_cycle: int
    cycles: int
    concurrent_median_ms: float
    concurrent_p95_ms: float
    sequential_median_ms: float
    sequential_p95_ms: float
    ratio_to_sequential: float
    target_ms: float
    unavailable_device_reads: int

    @property
    def meets_target(self) -> bool:
        """Median cycle within the target, with every device read every time."""
        return self.concurrent_median_ms <= self.target_ms and self.unavailable_device_reads == 0


def site_config(ups_units: int, pdus: int, outlets_per_pdu: int) -> dict[str, Any]:
    """A scenario with a constant-load service on every outlet, PDUs spread over the UPS units."""
    ups = [
        {
            "id": f"ups{u + 1}",
            "capacity_wh": 2000,
            "rated_w": 5000,
            "runtime_full_load_s": 600,
            "soc_start_pct": 100,
        }
        for u in range(ups_units)
    ]
    pdu_list = [
        {
            "id": f"pdu{p + 1:02d}",
            "ups": f"ups{p % ups_units + 1}",
            "limit_w": 3600,
            "outlets": outlets_per_pdu,
        }
        for p in range(pdus)
    ]
    services = [
        {
            "id": f"{pdu['id']}-host{n}",
            "priority": "low",
            "outlets": [f"{pdu['id']}/{n}"],
            "load": {"constant_w": 10 + (7 * n) % 90},
        }
        for pdu in pdu_list
        for n in range(1, outlets_per_pdu + 1)
    ]
    return {"name": "modbus-poll", "ups": ups, "pdus": pdu_list, "services": services}


def devices_for(config: dict[str, Any], ports: dict[str, int]) -> list[ModbusDevice]:
    """Driver configuration for every device the simulator serves."""
    ups_profile, pdu_profile = load_profile("apc_smart_ups"), load_profile("generic_pdu")
    return [
        *(
            ModbusDevice(
                u["id"], HOST, ups_profile, port=ports[u["id"]], timeout_s=DEVICE_TIMEOUT_S
            )
            for u in config["ups"]
        ),
        *(
            ModbusDevice(
                p["id"],
                HOST,
                pdu_profile,
                port=ports[p["id"]],
                outlet_count=p["outlets"],
                timeout_s=DEVICE_TIMEOUT_S,
            )
            for p in config["pdus"]
        ),
    ]


def _unavailable(snapshot_ups: dict[str, Any], snapshot_outlets: dict[str, Any]) -> int:
    return sum(not r.available for r in snapshot_ups.values()) + sum(
        not r.available for r in snapshot_outlets.values()
    )


async def _poll(devices: list[ModbusDevice], cycles: int) -> ModbusPollBenchmark:
    together = ModbusDriver(devices)
    one_by_one = [ModbusDriver([device]) for device in devices]
    drivers = [together, *one_by_one]
    await asyncio.gather(*(driver.start() for driver in drivers))
    concurrent_ms: list[float] = []
    sequential_ms: list[float] = []
    unavailable = 0
    try:
        for cycle in range(WARMUP_CYCLES + cycles):
            started = time.perf_counter()
            snapshot = await together.read(float(cycle))
            together_ms = 1000 * (time.perf_counter() - started)
            started = time.perf_counter()
            singles = [await driver.read(float(cycle)) for driver in one_by_one]
            single_ms = 1000 * (time.perf_counter() - started)
            if cycle < WARMUP_CYCLES:
                continue
            concurrent_ms.append(together_ms)
            sequential_ms.append(single_ms)
            unavailable += _unavailable(snapshot.ups, snapshot.outlets)
            unavailable += sum(_unavailable(s.ups, s.outlets) for s in singles)
    finally:
        await asyncio.gather(*(driver.stop() for driver in drivers))
    concurrent_median = statistics.median(concurrent_ms)
    sequential_median = statistics.median(sequential_ms)
    pdus = [d for d in devices if d.outlet_count]
    return ModbusPollBenchmark(
        ups_units=len(devices) - len(pdus),
        pdus=len(pdus),
        outlets=sum(d.outlet_count for d in pdus),
        requests_per_cycle=together.requests_per_cycle,
        cycles=cycles,
        concurrent_median_ms=concurrent_median,
        concurrent_p95_ms=_p95(concurrent_ms),
        sequential_median_ms=sequential_median,
        sequential_p95_ms=_p95(sequential_ms),
        ratio_to_sequential=concurrent_median / sequential_median,
        target_ms=TARGET_MS,
        unavailable_device_reads=unavailable,
    )


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


async def measure_modbus_poll(
    cycles: int, pdus: int = 20, outlets_per_pdu: int = 24, ups_units: int = 2
) -> dict[str, Any]:
    """Start the simulator in its own process, measure `cycles` polls, stop it; the figures."""
    config = site_config(ups_units, pdus, outlets_per_pdu)
    with tempfile.TemporaryDirectory() as workdir:
        scenario = Path(workdir) / "modbus-poll.yaml"
        scenario.write_text(yaml.safe_dump(config))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "simulator", "run", str(scenario)),
            *("--host", HOST, "--modbus-port", "0", "--control-port", "0"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=Path(__file__).parents[1],
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
            if not line:
                raise RuntimeError(f"the simulator exited with {await process.wait()}")
            ports = json.loads(line)["modbus"]
            result = await _poll(devices_for(config, ports), cycles)
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
    figures = asdict(result)
    figures["meets_target"] = result.meets_target
    return figures


def run_modbus_poll_benchmark(
    cycles: int, pdus: int = 20, outlets_per_pdu: int = 24, ups_units: int = 2
) -> dict[str, Any]:
    """`measure_modbus_poll` for callers outside an event loop."""
    return asyncio.run(measure_modbus_poll(cycles, pdus, outlets_per_pdu, ups_units))


def format_table(figures: dict[str, Any]) -> str:
    """The figures as a plain-text table."""
    rows = [
        ("devices", f"{figures['ups_units']} UPS + {figures['pdus']} PDUs"),
        ("outlets", f"{figures['outlets']}"),
        ("requests per cycle", f"{figures['requests_per_cycle']}"),
        ("cycles measured", f"{figures['cycles']}"),
        ("concurrent median / p95 ms", _pair(figures, "concurrent")),
        ("one after another median / p95 ms", _pair(figures, "sequential")),
        ("ratio to one after another", f"{figures['ratio_to_sequential']:.3f}"),
        ("target median ms", f"<= {figures['target_ms']:.0f}"),
        ("unavailable device reads", f"{figures['unavailable_device_reads']}"),
        ("meets target", "yes" if figures["meets_target"] else "no"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _pair(figures: dict[str, Any], kind: str) -> str:
    return f"{figures[f'{kind}_median_ms']:.1f} / {figures[f'{kind}_p95_ms']:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.modbus_poll")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--pdus", type=int, default=20)
    parser.add_argument("--outlets", type=int, default=24, help="outlets per PDU")
    parser.add_argument("--ups", type=int, default=2, help="UPS units")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    figures = run_modbus_poll_benchmark(args.cycles, args.pdus, args.outlets, args.ups)
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


if __name__ == "__main__":
    keep_stdout_for_python()
    sys.exit(main())
