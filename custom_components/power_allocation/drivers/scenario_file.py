"""Reads scenario files (DESIGN.md, "Scenario files"): YAML checked by a voluptuous schema.

Unknown keys are errors. Every error is a `ScenarioFileError` whose message names the file and
the path of the offending key (`services[2].load.mean_w: ...`), so a user sees what to fix.
Trace CSVs are read relative to the scenario file's folder: a timestamp column (ISO 8601, or
plain seconds) and the numeric column the service names; blank cells are skipped, so the value
before a gap holds through it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml  # type: ignore[import-untyped]

from ..engine.model import TopologyError
from ..engine.scenario import Scenario, ScenarioError, Trace, build_scenario
from .bounded_yaml import YamlBoundError, load_bounded_yaml
from .schema_errors import is_unknown_key


class ScenarioFileError(ValueError):
    """A scenario file that cannot be used: names the file and the problem."""


def _finite(value: Any) -> float:
    number = vol.Coerce(float)(value)
    if isinstance(value, bool) or not math.isfinite(number):
        raise vol.Invalid(f"expected a finite number, got {value!r}")
    return float(number)


_NUMBER = vol.All(_finite)
_NON_NEGATIVE = vol.All(_finite, vol.Range(min=0))
_POSITIVE = vol.All(_finite, vol.Range(min=0, min_included=False))
_ID = vol.All(str, vol.Length(min=1))

_UPS = vol.Schema(
    {
        vol.Required("id"): _ID,
        vol.Required("capacity_wh"): _POSITIVE,
        vol.Required("rated_w"): _POSITIVE,
        vol.Required("runtime_full_load_s"): _POSITIVE,
        vol.Optional("peukert_k"): vol.All(_finite, vol.Range(min=1, max=3)),
        vol.Optional("efficiency"): vol.All(_finite, vol.Range(min=0, max=1, min_included=False)),
        vol.Optional("soc_start_pct", default=100.0): vol.All(_finite, vol.Range(min=0, max=100)),
    }
)
_PDU = vol.Schema(
    {
        vol.Required("id"): _ID,
        vol.Required("ups"): _ID,
        vol.Required("limit_w"): _POSITIVE,
        vol.Required("outlets"): vol.All(int, vol.Range(min=1)),
        vol.Optional("outlet_limits_w"): {vol.All(int, vol.Range(min=1)): _POSITIVE},
    }
)
_CONSTANT_LOAD = vol.Schema({vol.Required("constant_w"): _NON_NEGATIVE})
_TRACE_LOAD = vol.Schema(
    {
        vol.Required("trace"): _ID,
        vol.Required("column"): _ID,
        vol.Required("mean_w"): _NON_NEGATIVE,
        vol.Optional("offset_s", default=0.0): _NON_NEGATIVE,
    }
)
_PERIODIC_LOAD = vol.Schema(
    {
        vol.Required("base_w"): _NON_NEGATIVE,
        vol.Required("peak_w"): _NON_NEGATIVE,
        vol.Required("period_s"): _POSITIVE,
        vol.Optional("noise_ratio", default=0.0): vol.All(_finite, vol.Range(min=0, max=1)),
    }
)


def _load(value: Any) -> Any:
    """Exactly one load model, chosen by its distinguishing key."""
    if not isinstance(value, Mapping):
        raise vol.Invalid("expected a mapping with constant_w, trace, or base_w/peak_w/period_s")
    for key, schema in (
        ("constant_w", _CONSTANT_LOAD),
        ("trace", _TRACE_LOAD),
        ("base_w", _PERIODIC_LOAD),
    ):
        if key in value:
            return schema(dict(value))
    raise vol.Invalid("expected one of constant_w, trace, or base_w/peak_w/period_s")


_SERVICE = vol.Schema(
    {
        vol.Required("id"): _ID,
        vol.Required("priority"): vol.In(["critical", "high", "medium", "low"]),
        vol.Required("outlets"): vol.All([_ID], vol.Length(min=1)),
        vol.Optional("depends_on"): [_ID],
        vol.Optional("shutdown_s"): _NON_NEGATIVE,
        vol.Optional("startup_s"): _NON_NEGATIVE,
        vol.Optional("idle_w"): _NON_NEGATIVE,
        vol.Optional("throttle"): {vol.Required("min_w"): _POSITIVE},
        vol.Required("load"): _load,
    }
)
_LOAD_STEP = vol.Schema(
    {
        vol.Required("at_s"): _NON_NEGATIVE,
        vol.Required("kind"): "load_step",
        vol.Required("service"): _ID,
        vol.Required("extra_w"): _NUMBER,
        vol.Required("duration_s"): _NON_NEGATIVE,
    }
)
_FAULT_BASE = {
    vol.Required("at_s"): _NON_NEGATIVE,
    vol.Required("duration_s"): _NON_NEGATIVE,
}
_TELEMETRY_GAP = vol.Schema({**_FAULT_BASE, vol.Required("kind"): "telemetry_gap"})
_MAINS_FLICKER = vol.Schema({**_FAULT_BASE, vol.Required("kind"): "mains_flicker"})
_COMMAND_FAILS = vol.Schema(
    {**_FAULT_BASE, vol.Required("kind"): "command_fails", vol.Required("service"): _ID}
)
_OUTLET_STUCK = vol.Schema(
    {**_FAULT_BASE, vol.Required("kind"): "outlet_stuck", vol.Required("outlet"): _ID}
)
_UPS_RUNTIME_JUMP = vol.Schema(
    {
        **_FAULT_BASE,
        vol.Required("kind"): "ups_runtime_jump",
        vol.Required("ups"): _ID,
        vol.Required("factor"): vol.All(_finite, vol.Range(min=0)),
    }
)
_EVENTS_BY_KIND = {
    "load_step": _LOAD_STEP,
    "telemetry_gap": _TELEMETRY_GAP,
    "mains_flicker": _MAINS_FLICKER,
    "command_fails": _COMMAND_FAILS,
    "outlet_stuck": _OUTLET_STUCK,
    "ups_runtime_jump": _UPS_RUNTIME_JUMP,
}


def _event(value: Any) -> Any:
    """One timeline event, checked against the schema of its `kind`."""
    if not isinstance(value, dict):
        raise vol.Invalid("an event must be a mapping")
    schema = _EVENTS_BY_KIND.get(str(value.get("kind")))
    if schema is None:
        raise vol.Invalid(
            f"unknown event kind {value.get('kind')!r} ({', '.join(_EVENTS_BY_KIND)})", ["kind"]
        )
    return schema(value)


_TIMELINE = vol.Schema(
    {
        vol.Optional("history_s", default=0.0): _NON_NEGATIVE,
        vol.Optional("outage_at_s"): _NON_NEGATIVE,
        vol.Optional("outage_duration_s", default=None): vol.Any(None, _NON_NEGATIVE),
        vol.Optional("events", default=[]): [_event],
    }
)
SCENARIO_SCHEMA = vol.Schema(
    {
        vol.Required("name"): _ID,
        vol.Optional("seed", default=0): int,
        vol.Optional("step_s", default=1.0): _POSITIVE,
        vol.Required("ups"): vol.All([_UPS], vol.Length(min=1)),
        vol.Optional("pdus", default=[]): [_PDU],
        vol.Required("services"): [_SERVICE],
        vol.Optional("timeline", default={}): _TIMELINE,
    }
)


def _where(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _explain(error: vol.Invalid) -> str:
    first = error.errors[0] if isinstance(error, vol.MultipleInvalid) else error
    where = _where(list(first.path))
    message = "unknown key" if is_unknown_key(first) else first.msg
    return f"{where}: {message}" if where else message


def read_trace(path: Path, column: str) -> Trace:
    """A trace CSV: its first column is the time, `column` the value; blank cells are skipped."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            if column not in fields:
                raise ScenarioFileError(f"trace {path}: no column {column!r} (has {fields})")
            time_field = fields[0]
            samples: list[tuple[float, float]] = []
            for line, row in enumerate(reader, start=2):
                cell = (row.get(column) or "").strip()
                stamp = (row.get(time_field) or "").strip()
                if not cell or not stamp:
                    continue
                try:
                    samples.append((_seconds(stamp), float(cell)))
                except ValueError:
                    raise ScenarioFileError(
                        f"trace {path} line {line}: {stamp!r}, {cell!r} is not a time and a number"
                    ) from None
    except OSError as error:
        raise ScenarioFileError(f"trace {path}: cannot be read ({error.strerror})") from None
    try:
        return Trace.from_samples(samples)
    except ScenarioError as error:
        raise ScenarioFileError(f"trace {path}: {error}") from None


def _seconds(stamp: str) -> float:
    try:
        return float(stamp)
    except ValueError:
        moment = datetime.fromisoformat(stamp)
        # Naive stamps are read as UTC so the result does not depend on the machine's zone.
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def scenario_from_mapping(config: Any, folder: Path, source: str = "scenario") -> Scenario:
    """A scenario from already-parsed YAML; traces are read relative to `folder`."""
    try:
        valid = SCENARIO_SCHEMA(config)
    except vol.Invalid as error:
        raise ScenarioFileError(f"{source}: {_explain(error)}") from None
    traces: dict[tuple[str, str], Trace] = {}
    for service in valid["services"]:
        load = service["load"]
        key = (load.get("trace"), load.get("column"))
        if "trace" in load and key not in traces:
            traces[key] = read_trace(folder / load["trace"], load["column"])
    try:
        return build_scenario(valid, traces)
    except (TopologyError, ScenarioError) as error:
        raise ScenarioFileError(f"{source}: {error}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (blocking: run it in an executor inside a loop)."""
    path = Path(path)
    try:
        config = load_bounded_yaml(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ScenarioFileError(f"{path}: cannot be read ({error.strerror})") from None
    except YamlBoundError as error:
        raise ScenarioFileError(f"{path}: refused ({error})") from None
    except yaml.YAMLError as error:
        raise ScenarioFileError(f"{path}: not valid YAML ({error})") from None
    return scenario_from_mapping(config, path.parent, str(path))
