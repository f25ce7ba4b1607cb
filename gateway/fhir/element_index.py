"""Element types of every FHIR type, from a generated data file: what the profile compiler
checks rule paths against without importing fhir.resources (a model module per type).

``_standard/elements.json`` is written by ``scripts/build_fhir_element_index.py`` from
:mod:`gateway.fhir.schema` (the tables the de-identifier walks) for the installed
fhir.resources; tests/test_profile_compiler.py checks the two agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.profiles.fhir_model import FhirVersion

INDEX = Path(__file__).resolve().parent / "_standard" / "elements.json"
PRIMITIVE_TYPES = frozenset(
    {
        "boolean",
        "integer",
        "integer64",
        "decimal",
        "string",
        "markdown",
        "code",
        "id",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "base64Binary",
        "date",
        "dateTime",
        "instant",
        "time",
        "positiveInt",
        "unsignedInt",
        "xhtml",
    }
)  # fmt: skip  (gateway.fhir.schema has the same set; the test checks they agree)
RESOURCE = "Resource"
ELEMENT = "Element"


def index_key(version: FhirVersion) -> str:
    """R4 and R4B share the R4B tables (fhir.resources.R4B); R5 has its own."""
    return "R5" if version is FhirVersion.R5 else "R4B"


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(INDEX.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class IndexedType:
    name: str
    elements: dict[str, str]  # element name -> its type name (no _primitive extensions)

    def element_type(self, element: str) -> str | None:
        """The type of ``element``; ``_birthDate`` (a primitive's extensions) is an Element."""
        if element.startswith("_"):
            return ELEMENT if self.elements.get(element[1:]) in PRIMITIVE_TYPES else None
        return self.elements.get(element)


class ElementIndex:
    """The types of one FHIR version: resources, data types and backbone elements."""

    def __init__(self, version: FhirVersion) -> None:
        self.version = version
        data = _load()
        self._types: dict[str, dict[str, str]] = data["types"][index_key(version)]
        self._resources = frozenset(data["resources"][index_key(version)])

    def resource(self, name: str) -> IndexedType | None:
        return IndexedType(name, self._types[name]) if name in self._resources else None

    def datatype(self, name: str) -> IndexedType | None:
        """A complex data type or backbone element (``Identifier``, ``PatientContact``)."""
        if name in self._resources or name not in self._types:
            return None
        return IndexedType(name, self._types[name])

    def type_names(self) -> list[str]:
        return sorted(self._types)

    def resources_with(self, element: str) -> list[str]:
        return sorted(r for r in self._resources if self._has(r, element))

    def _has(self, resource: str, element: str) -> bool:
        return IndexedType(resource, self._types[resource]).element_type(element) is not None


@lru_cache(maxsize=4)
def element_index(version: FhirVersion) -> ElementIndex:
    return ElementIndex(version)
