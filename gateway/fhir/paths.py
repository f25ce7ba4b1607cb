"""Does a FHIR rule name something that exists? Rule paths and types against the element tables.

A rule whose path names no element (``Patinet.name``, ``Patient.nmae``) never matches: the data
it was written for passes under the built-in defaults instead. So every segment of a path must
be an element of the type the previous segment has (data types and choice elements such as
``valueQuantity`` included), and a rule's method must be able to act on the type it reaches.
Checked once, by the profile compiler; the hot path matches without asking.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.fhir.element_index import PRIMITIVE_TYPES, RESOURCE, ElementIndex, IndexedType
from gateway.fhir.rules import ANY_RESOURCE, CompiledRule
from gateway.profiles.fhir_model import FhirMethod

PSEUDONYMISABLE_TYPES = frozenset(
    {"Identifier", "string", "id", "code", "uri", "oid", "uuid", "url", "markdown"}
)
DATE_TYPES = frozenset({"date", "dateTime", "instant"})  # as gateway.fhir.schema
ENCRYPTABLE_TYPES = frozenset({"string", "markdown", "uri", "url"})  # as gateway.fhir.state
NUMBER_TYPES = frozenset({"decimal", "integer", "integer64", "positiveInt", "unsignedInt"})
QUANTITY_TYPES = frozenset({"Quantity", "Age", "Duration", "Count", "Distance", "Money"})
GENERALIZABLE_TYPES = DATE_TYPES | {"Address", "Age"}


def _any(_type_name: str) -> bool:
    return True


# What each method can act on (gateway.fhir.methods removes the element otherwise).
METHOD_APPLIES: dict[FhirMethod, tuple[Callable[[str], bool], str]] = {
    FhirMethod.KEEP: (_any, "any type"),
    FhirMethod.REDACT: (_any, "any type"),
    FhirMethod.SUBSTITUTE: (_any, "any type"),
    FhirMethod.CLEAN: (_any, "any type"),
    FhirMethod.PSEUDONYMISE: (
        lambda t: t in PSEUDONYMISABLE_TYPES,
        ", ".join(sorted(PSEUDONYMISABLE_TYPES)),
    ),
    FhirMethod.DATE_SHIFT: (
        lambda t: t in DATE_TYPES or t not in PRIMITIVE_TYPES,
        "date, dateTime, instant or a complex type holding them",
    ),
    FhirMethod.GENERALIZE: (
        lambda t: t in GENERALIZABLE_TYPES,
        ", ".join(sorted(GENERALIZABLE_TYPES)),
    ),
    FhirMethod.PERTURB: (
        lambda t: t in NUMBER_TYPES or t in QUANTITY_TYPES,
        ", ".join(sorted(NUMBER_TYPES | QUANTITY_TYPES)),
    ),
    FhirMethod.ENCRYPT: (
        lambda t: t in ENCRYPTABLE_TYPES,
        ", ".join(sorted(ENCRYPTABLE_TYPES)),
    ),
}


# Refused when they reach no type they apply to. The others remove such an element at run time
# (fail closed; tests/test_fhir_rules.py::test_method_not_applicable_fails_closed): add a
# method here to refuse it at start instead.
REFUSED_WHEN_NOT_APPLICABLE = frozenset({FhirMethod.PSEUDONYMISE})


@dataclass(frozen=True)
class RuleIssue:
    """One problem of one rule: which of its settings (path, type, method), what, allowed."""

    setting: str
    what: str
    allowed: str = ""
    hint: str = ""  # "did you mean ...?"


@dataclass(frozen=True)
class _Resolved:
    types: frozenset[str] = frozenset()  # the types the path ends on
    issue: RuleIssue | None = None


def check_rule(rule: CompiledRule, indexes: tuple[ElementIndex, ...]) -> list[RuleIssue]:
    """Issues of one compiled rule; with several versions (``auto``) one that fits is enough."""
    resolved = [_resolve(rule, index) for index in indexes]
    fitting = [r for r in resolved if r.issue is None]
    if not fitting:
        first = resolved[0].issue
        assert first is not None
        versions = " or ".join(s.version.value for s in indexes)
        what = f"{first.what} in FHIR {versions}"
        return [RuleIssue(first.setting, what + first.hint, first.allowed)]
    types = frozenset().union(*(r.types for r in fitting))
    applies, allowed = METHOD_APPLIES[rule.method]
    refused = rule.method in REFUSED_WHEN_NOT_APPLICABLE
    if refused and types and not any(applies(t) for t in types):
        reached = ", ".join(sorted(types))
        return [RuleIssue("method", f"{rule.method.value} does not apply to {reached}", allowed)]
    return []


def _resolve(rule: CompiledRule, index: ElementIndex) -> _Resolved:
    if rule.rule.type is not None:
        return _resolve_type(rule.rule.type, index)
    names = [s.name for s in rule.segments]
    if rule.root in ANY_RESOURCE:
        return _resolve_any_resource(names, index)
    typedef = index.resource(rule.root) or index.datatype(rule.root)
    if typedef is None:
        if rule.root in PRIMITIVE_TYPES and not names:
            return _Resolved(frozenset({rule.root}))
        what = f"'{rule.root}' is not a resource or data type"
        hint = _close(rule.root, index.type_names())
        allowed = "a resource type, a data type, '*' or Resource"
        return _Resolved(issue=RuleIssue("path", what, allowed, hint))
    if not names:
        return _Resolved(frozenset({typedef.name}))
    return _walk(typedef, names, index)


def _resolve_type(name: str, index: ElementIndex) -> _Resolved:
    if name in PRIMITIVE_TYPES or index.datatype(name) is not None:
        return _Resolved(frozenset({name}))
    hint = _close(name, sorted(PRIMITIVE_TYPES) + index.type_names())
    allowed = "a primitive or complex data type"
    return _Resolved(issue=RuleIssue("type", f"'{name}' is not a data type", allowed, hint))


def _walk(typedef: IndexedType, names: list[str], index: ElementIndex) -> _Resolved:
    """Follow ``names`` from ``typedef``: every one an element of the type before it."""
    for position, name in enumerate(names):
        type_name = typedef.element_type(name)
        if type_name is None:
            allowed = sorted(typedef.elements)
            what = f"'{name}' is not an element of {typedef.name}"
            hint = _close(name, allowed)
            return _Resolved(issue=RuleIssue("path", what, ", ".join(allowed), hint))
        if position == len(names) - 1:
            return _Resolved(frozenset({type_name}))
        inner = None if type_name == RESOURCE else index.datatype(type_name)
        if inner is None:
            kind = f"a primitive ({type_name})" if type_name in PRIMITIVE_TYPES else "a resource"
            return _Resolved(
                issue=RuleIssue(
                    "path",
                    f"'{name}' of {typedef.name} is {kind}: the path cannot go on to "
                    f"'{names[position + 1]}'",
                    f"the path ending at '{name}'",
                )
            )
        typedef = inner
    return _Resolved(frozenset({typedef.name}))


def _resolve_any_resource(names: list[str], index: ElementIndex) -> _Resolved:
    """``*.description``: fits when at least one resource type has the path."""
    if not names:
        return _Resolved()
    for typedef in _resources_with(names[0], index):
        found = _walk(typedef, names, index)
        if found.issue is None:
            return found  # one resource type that has the path is enough
    return _Resolved(
        issue=RuleIssue(
            "path",
            f"no resource type has '{'.'.join(names)}'",
            "a path some resource type has (e.g. *.identifier, *.text)",
        )
    )


def _resources_with(name: str, index: ElementIndex) -> Iterator[IndexedType]:
    for resource_type in index.resources_with(name):
        typedef = index.resource(resource_type)
        if typedef is not None and typedef.element_type(name) is not None:
            yield typedef


def _close(name: str, candidates: list[str]) -> str:
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return f" (did you mean '{found[0]}'?)" if found else ""
