"""Smoke test: the Modbus poll benchmark still runs end to end on a tiny site."""

from __future__ import annotations

from benchmarks.modbus_poll import format_table, run_modbus_poll_benchmark


def test_modbus_poll_benchmark_runs_on_a_tiny_site(socket_enabled: None) -> None:
    figures = run_modbus_poll_benchmark(cycles=2, pdus=2, outlets_per_pdu=3, ups_units=1)
    assert figures["outlets"] == 6
    assert figures["requests_per_cycle"] == 3 + 2 * 2  # UPS: 3 blocks; PDU: watts + relays
    assert figures["unavailable_device_reads"] == 0
    assert figures["cycles"] == 2
    assert figures["ratio_to_sequential"] > 0
    assert "ratio to one after another" in format_table(figures)
