"""YAML a user gives (a topology, a scenario file), parsed within bounds.

`yaml.safe_load` builds no arbitrary object, but bounds nothing: an anchor aliased by anchors
nine levels deep turns 3 KB of text into tens of megabytes the moment the document is copied out
(stored in a config entry, written as JSON), and a few hundred levels of nesting run its composer
out of recursion. `load_bounded_yaml` refuses, before anything is built from the text:

- text longer than `MAX_TEXT_CHARS`;
- nesting deeper than `MAX_DEPTH` levels, an alias counting as deep as what it stands for;
- a document whose size, every alias expanded, exceeds `MAX_EXPANDED_SIZE` (one per node plus
  the characters of each scalar: roughly its length written out without aliases), and an alias
  inside its own anchor (a cycle, which no bound expands).

The largest document the project ships (a 30-service site) is 7.6 KB and 7 levels deep: the
bounds leave a site 30 times larger room, and keep what one document can store at half a
megabyte, far from Python's recursion limit.
"""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped]

MAX_TEXT_CHARS = 256 * 1024
MAX_EXPANDED_SIZE = 512 * 1024
MAX_DEPTH = 32


class YamlBoundError(yaml.YAMLError):  # type: ignore[misc]
    """YAML refused for its size or depth; the message names the bound."""


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A `SafeLoader` whose composer counts every node, aliases expanded, and tracks depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # of the node being composed
        self._deepest = 0  # reached inside the anchored node being composed
        self._size = 0  # of the document so far, aliases expanded
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (size, height) once composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self.anchors and anchor not in self._anchored:
                raise YamlBoundError(f"the alias *{anchor} is inside its own anchor")
            # An undefined alias: the composer raises its own error.
            size, height = self._anchored.get(anchor, (0, 0))
            self._grow(size, self._depth + height)
            return super().compose_node(parent, index)
        anchor = self.peek_event().anchor
        self._depth += 1
        self._grow(0, self._depth)
        outer_deepest, self._deepest = self._deepest, self._depth
        size_before = self._size
        node = super().compose_node(parent, index)
        self._grow(1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0), 0)
        if anchor is not None:
            self._anchored[anchor] = (self._size - size_before, self._deepest - self._depth + 1)
        self._deepest = max(outer_deepest, self._deepest)
        self._depth -= 1
        return node

    def _grow(self, size: int, depth: int) -> None:
        """Count `size` more and a node reaching `depth`; raise past a bound."""
        self._size += size
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            raise YamlBoundError(f"the YAML nests deeper than {MAX_DEPTH} levels (the limit)")
        if self._size > MAX_EXPANDED_SIZE:
            raise YamlBoundError(
                f"the YAML, its aliases expanded, is larger than {MAX_EXPANDED_SIZE} characters "
                "(the limit)"
            )


def load_bounded_yaml(text: str) -> Any:
    """One YAML document, as `yaml.safe_load` reads it, within the module's bounds. Raises
    `YamlBoundError` past a bound, `yaml.YAMLError` for text that is not YAML."""
    if len(text) > MAX_TEXT_CHARS:
        raise YamlBoundError(
            f"the YAML is {len(text)} characters long, more than {MAX_TEXT_CHARS} (the limit)"
        )
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
