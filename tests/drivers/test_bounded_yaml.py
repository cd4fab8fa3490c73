"""User YAML within bounds: anchor bombs, deep nesting and long text are refused by the one
loader every user YAML goes through (topologies, scenario files), naming the bound."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from custom_components.power_allocation.drivers.bounded_yaml import (
    MAX_DEPTH,
    MAX_EXPANDED_SIZE,
    MAX_TEXT_CHARS,
    YamlBoundError,
    load_bounded_yaml,
)
from custom_components.power_allocation.drivers.scenario_file import (
    ScenarioFileError,
    load_scenario,
)

ROOT = Path(__file__).parents[2]


def anchor_bomb(levels: int = 9, indent: str = "") -> str:
    """A billion laughs: each anchor aliases the one before nine times (3 KB of text that
    expands to billions of nodes)."""
    lines = [f'{indent}l0: &l0 ["{"lol" * 20}"]']
    lines += [
        f"{indent}l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels + 1)
    ]
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_an_anchor_bomb_is_refused_naming_the_bound() -> None:
    with pytest.raises(YamlBoundError, match=f"larger than {MAX_EXPANDED_SIZE} characters"):
        load_bounded_yaml(anchor_bomb())


def test_an_alias_is_counted_as_large_as_what_it_stands_for() -> None:
    # 2,000 aliases of a 400-character string: 12 KB of text, 800 KB once expanded.
    text = f"a: &a {'x' * 400}\nb: [{', '.join(['*a'] * 2000)}]\n"
    assert len(text) < MAX_TEXT_CHARS
    with pytest.raises(YamlBoundError, match="its aliases expanded"):
        load_bounded_yaml(text)


def test_aliases_within_the_bound_read_as_safe_load_reads_them() -> None:
    text = "base: &base {action: script.stop, data: {delay: 5}}\na: *base\nb: {<<: *base, x: 1}\n"
    assert load_bounded_yaml(text) == yaml.safe_load(text)


def test_nesting_up_to_the_bound_is_read_and_deeper_is_refused() -> None:
    assert load_bounded_yaml(nested(MAX_DEPTH)) is not None
    with pytest.raises(YamlBoundError, match=f"deeper than {MAX_DEPTH} levels"):
        load_bounded_yaml(nested(MAX_DEPTH + 1))


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    # safe_load raises RecursionError here (an HTTP 500 from an action or a form).
    with pytest.raises(YamlBoundError, match="deeper than"):
        load_bounded_yaml(nested(100_000))


def test_an_alias_nests_as_deep_as_what_it_stands_for() -> None:
    half = MAX_DEPTH // 2 + 1
    text = f"a: &a {nested(half)}\nb: {'[' * half}*a{']' * half}\n"
    with pytest.raises(YamlBoundError, match="deeper than"):
        load_bounded_yaml(text)


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(YamlBoundError, match="inside its own anchor"):
        load_bounded_yaml("a: &a [1, *a]")


def test_text_longer_than_the_bound_is_refused() -> None:
    with pytest.raises(YamlBoundError, match=f"more than {MAX_TEXT_CHARS}"):
        load_bounded_yaml("#" * (MAX_TEXT_CHARS + 1))


def test_an_undefined_alias_is_a_yaml_error() -> None:
    with pytest.raises(yaml.YAMLError, match="undefined alias"):
        load_bounded_yaml("a: *nowhere")


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for folder in ("simulator", "benchmarks", "docs", "tests")
        for p in (ROOT / folder).rglob("*.yaml")
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_yaml_the_project_ships_is_within_the_bounds(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert load_bounded_yaml(text) == yaml.safe_load(text)


def test_a_scenario_file_with_an_anchor_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(f"name: bomb\nextra:\n{anchor_bomb(indent='  ')}", encoding="utf-8")
    with pytest.raises(ScenarioFileError, match=f"bomb.yaml: refused .*{MAX_EXPANDED_SIZE}"):
        load_scenario(path)


def test_a_deeply_nested_scenario_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(f"name: deep\nextra: {nested(5000)}\n", encoding="utf-8")
    with pytest.raises(ScenarioFileError, match=f"deeper than {MAX_DEPTH} levels"):
        load_scenario(path)
