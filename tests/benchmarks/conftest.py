"""Fixtures the benchmarks' tests share."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.engine.outage_scenarios import RACK


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A scenario folder holding one tiny rack with a 15-minute outage."""
    config = copy.deepcopy(RACK)
    config["timeline"]["outage_duration_s"] = 900
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path
