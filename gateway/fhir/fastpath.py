"""Native evaluation of the FHIRPath filters profiles use most, equivalent to fhirpathpy's.

``where()`` filters run once per matching element (every Identifier, every Extension), and
fhirpathpy costs ~250 us a call. Two shapes cover the bundled profiles and are evaluated here in
a few microseconds; anything else falls back to fhirpathpy. ``tests/test_fhir_fastpath.py``
checks both agree on a table of cases.

* ``a.b = 'literal'``: ``[]`` when the path selects nothing, ``[True]`` when it selects exactly
  one value equal to the literal, ``[False]`` otherwise.
* ``a.b.exists(c = 'x' or c = 'y' ...)``: ``[True]`` when any element at ``a.b`` has ``c`` equal
  to one of the literals, else ``[False]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = rf"{_NAME}(?:\.{_NAME})*"
_EQUALS = re.compile(rf"^\s*({_PATH})\s*=\s*'([^'\\]*)'\s*$")
_EXISTS = re.compile(rf"^\s*({_PATH})\.exists\((.*)\)\s*$")
_TERM = re.compile(rf"^\s*({_NAME})\s*=\s*'([^'\\]*)'\s*$")

Filter = Callable[[Any], list[bool]]


def _select(value: Any, path: list[str]) -> list[Any]:
    items = [value]
    for name in path:
        nxt: list[Any] = []
        for item in items:
            if isinstance(item, dict) and name in item:
                child = item[name]
                nxt.extend(child if isinstance(child, list) else [child])
        items = nxt
    return items


def compile_fast(expression: str) -> Filter | None:
    """A native filter for the supported shapes, None otherwise."""
    match = _EQUALS.match(expression)
    if match:
        path = match.group(1).split(".")
        literal = match.group(2)

        def equals(value: Any) -> list[bool]:
            found = _select(value, path)
            if not found:
                return []
            return [len(found) == 1 and isinstance(found[0], str) and found[0] == literal]

        return equals
    match = _EXISTS.match(expression)
    if match:
        path = match.group(1).split(".")
        terms = [_TERM.match(t) for t in match.group(2).split(" or ")]
        if not terms or any(t is None for t in terms):
            return None
        fields = {t.group(1) for t in terms if t}
        if len(fields) != 1:
            return None
        field = fields.pop()
        literals = frozenset(t.group(2) for t in terms if t)

        def exists(value: Any) -> list[bool]:
            return [
                any(
                    isinstance(item, dict) and item.get(field) in literals
                    for item in _select(value, path)
                )
            ]

        return exists
    return None
