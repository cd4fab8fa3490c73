"""The stored state of a site, checked part by part before the site resumes from it.

`SiteDecider.to_state` writes a JSON document; what is read back may be anything (a hand edit, a
disk error, another version's bug). A part the decider cannot read used to raise at setup, which
Home Assistant retried forever, and a part of the wrong type could read as something else
(`"conservative": "no"` is true to `bool`). `clean_stored_state` validates the document with
voluptuous, field by field, and resets (removes) every part that is not valid, so that the
decider starts that part cold and keeps the rest:

- `version`: another version is the decider's own rule (everything starts cold), kept as is;
- `controller`: its mode and outage times together (one invalid: the whole controller starts
  afresh), each UPS's charge, each service's phase, each hold;
- `demand`, `nodes`: each forecaster, each last reading, typical draw and time off;
- `battery_fits`: each UPS's fit; `priority_overrides`: each service's tier;
- `conservative`: a real boolean; `outages_s`: each length.

Numbers must be finite (and not booleans), texts texts, booleans booleans. Forecasters keep the
engine's own private format: the engine reads them, and one forecast from each proves the read,
so that this module does not copy their layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import voluptuous as vol

from .engine.controller import STATE_VERSION as CONTROLLER_VERSION
from .engine.controller import Mode, Phase
from .engine.decider import NODE_FORECAST_SETTINGS, STATE_VERSION
from .engine.demand import SERVICE_FORECAST_SETTINGS
from .engine.forecast import ForecastSettings, LoadForecaster
from .engine.model import Priority

type Validator = Callable[[Any], Any]


def _finite(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise vol.Invalid(f"not a finite number: {value!r}")
    return value


def _count(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise vol.Invalid(f"not a count: {value!r}")
    return value


_FINITE_OR_NONE = vol.Any(None, _finite)
_RATIO = vol.All(_finite, vol.Range(min=0, max=1))
_NON_NEGATIVE = vol.All(_finite, vol.Range(min=0))

# What the controller's other fields mean depends on these: one wrong, it starts afresh.
_CONTROLLER_CORE = vol.Schema(
    {
        vol.Required("version"): CONTROLLER_VERSION,
        vol.Required("mode"): vol.In([m.value for m in Mode]),
        vol.Required("outage_started_s"): _FINITE_OR_NONE,
        vol.Required("mains_back_s"): _FINITE_OR_NONE,
        vol.Required("last_start_s"): _FINITE_OR_NONE,
        vol.Required("soc_at_s"): _FINITE_OR_NONE,
        vol.Optional("look_interval_s"): _FINITE_OR_NONE,
    },
    extra=vol.ALLOW_EXTRA,
)
_SERVICE_CONTROL = vol.Schema(
    {
        vol.Required("phase"): vol.In([p.value for p in Phase]),
        vol.Required("since_s"): _finite,
        vol.Required("cap_w"): vol.Any(None, _NON_NEGATIVE),
        vol.Required("shed_in_outage"): bool,
        vol.Required("shed_for_limit_s"): _FINITE_OR_NONE,
        vol.Required("switch_attempts"): _count,
        vol.Required("next_switch_s"): _finite,
        vol.Required("reason"): str,
    }
)
# The controller's maps: name -> what each value must be; required ones are kept, even empty.
_CONTROLLER_MAPS: dict[str, tuple[Validator, bool]] = {
    "soc_ratio": (_RATIO, True),
    "runtime_disagrees_since_s": (_finite, True),
    "charge_implausible_since_s": (_finite, False),
    "seen_off_since_s": (_finite, False),
    "services": (_SERVICE_CONTROL, True),
}
# Its lists of service ids: name -> whether it is required.
_CONTROLLER_IDS = {"held_on": True, "held_off": True, "found_off": False}
_BATTERY_FIT = vol.Schema(
    {vol.Required(k): _finite for k in ("n", "sx", "sy", "sxx", "sxy", "readings_used")}
)
_TYPICAL = vol.All(vol.ExactSequence([_finite, _finite, _finite]), list)
_TIER = vol.In([p.value for p in Priority])
# A type alone, in a Schema: checked, never converted (`bool("no")` is True).
_BOOL = vol.Schema(bool)
_TEXT = vol.Schema(str)


def _forecaster(settings: ForecastSettings) -> Validator:
    """A forecaster's state, made with `settings` (what the decider gives one of its kind: any
    other, such as a horizon of millions of steps, is no forecaster of this site)."""
    expected = asdict(settings)

    def validate(value: Any) -> Any:
        if not isinstance(value, Mapping) or value.get("settings") != expected:
            raise vol.Invalid("not a forecaster of this site's settings")
        try:
            _exercise(LoadForecaster.from_state(value), value["resampler"][0], settings)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as error:
            raise vol.Invalid(f"not a forecaster's state: {error!r}") from None
        return value

    return validate


def _exercise(forecaster: LoadForecaster, open_step: Any, settings: ForecastSettings) -> None:
    """On a copy read from the state: learn from a horizon's worth of steps after the one it
    has open, then across a gap, forecasting and saving; what would fail on the state fails
    here."""
    first = 0 if open_step is None else open_step + 1
    steps = [*range(first, first + settings.horizon_steps + 2), first + 10_000, first + 10_001]
    for step in steps:
        forecaster.observe(step * settings.step_s, 100.0)
        forecaster.forecast()
    forecaster.to_state()


_SERVICE_FORECASTER = _forecaster(SERVICE_FORECAST_SETTINGS)
_NODE_FORECASTER = _forecaster(NODE_FORECAST_SETTINGS)


class _Cleaner:
    """Keeps what is valid and the names of the parts it reset (`demand.last_w.db`)."""

    def __init__(self) -> None:
        self.reset: list[str] = []

    def check(self, value: Any, schema: Validator, where: str) -> tuple[bool, Any]:
        try:
            return True, schema(value)
        except vol.Invalid:
            self.reset.append(where)
            return False, None

    def entries(self, value: Any, schema: Validator, where: str) -> dict[str, Any] | None:
        """A map's valid entries (its keys texts); None, reset whole, when it is no map."""
        if not isinstance(value, Mapping):
            self.reset.append(where)
            return None
        kept: dict[str, Any] = {}
        for key, item in value.items():
            ok, checked = self.check(item, schema, f"{where}.{key}")
            if ok and isinstance(key, str):
                kept[key] = checked
        return kept

    def items(self, value: Any, schema: Validator, where: str) -> list[Any] | None:
        """A list's valid items; None, reset whole, when it is no list."""
        if not isinstance(value, list):
            self.reset.append(where)
            return None
        kept = []
        for item in value:
            try:
                kept.append(schema(item))
            except vol.Invalid:
                continue
        if len(kept) != len(value):
            self.reset.append(where)
        return kept

    def controller(self, value: Any) -> dict[str, Any] | None:
        ok, core = self.check(value, _CONTROLLER_CORE, "controller")
        if not ok:
            return None
        cleaned = dict(core)
        for name, (schema, required) in _CONTROLLER_MAPS.items():
            if name not in cleaned and not required:
                continue
            entries = self.entries(cleaned.get(name), schema, f"controller.{name}")
            cleaned[name] = {} if entries is None else entries
        for name, required in _CONTROLLER_IDS.items():
            if name in cleaned or required:
                ids = self.items(cleaned.get(name), _TEXT, f"controller.{name}")
                cleaned[name] = [] if ids is None else ids
        both = set(cleaned["held_on"]) & set(cleaned["held_off"])
        if both:  # held on and off at once: neither hold can be right
            self.reset.append(f"controller.holds of {', '.join(sorted(both))}")
            cleaned["held_on"] = [s for s in cleaned["held_on"] if s not in both]
            cleaned["held_off"] = [s for s in cleaned["held_off"] if s not in both]
        return cleaned

    def demand(self, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            self.reset.append("demand")
            return None
        cleaned: dict[str, Any] = {}
        parts: dict[str, Validator] = {
            "forecasters": _SERVICE_FORECASTER,
            "last_w": _finite,
            "typical": _TYPICAL,
            "off_since_s": _finite,
        }
        for name, schema in parts.items():
            if name in value:
                entries = self.entries(value[name], schema, f"demand.{name}")
                if entries is not None:
                    cleaned[name] = entries
        return cleaned


def clean_stored_state(stored: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The stored state with every invalid part removed, and the names of those parts. None
    (everything starts cold) for no state, or one that is not a mapping."""
    if stored is None:
        return None, []
    if not isinstance(stored, Mapping):
        return None, ["the whole state"]
    cleaner = _Cleaner()
    cleaned: dict[str, Any] = {}
    if "version" in stored:
        cleaned["version"] = stored["version"]
    if stored.get("version") != STATE_VERSION:
        return cleaned, []  # the decider starts all of it cold
    maps: dict[str, Validator] = {
        "nodes": _NODE_FORECASTER,
        "battery_fits": _BATTERY_FIT,
        "priority_overrides": _TIER,
    }
    for name, value in stored.items():
        part: Any = None
        match name:
            case "version":
                continue
            case "controller":
                part = cleaner.controller(value)
            case "demand":
                part = cleaner.demand(value)
            case "conservative":
                part = cleaner.check(value, _BOOL, name)[1]
            case "outages_s":
                part = cleaner.items(value, _NON_NEGATIVE, name)
            case _ if name in maps:
                part = cleaner.entries(value, maps[name], name)
            case _:
                cleaner.reset.append(name)  # no part of this version's state
        if part is not None:
            cleaned[name] = part
    return cleaned, cleaner.reset
