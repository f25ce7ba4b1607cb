"""Element types of FHIR resources, read once from the fhir.resources models.

The hot path never builds pydantic models: it walks plain JSON and asks this table what FHIR
type an element has (``Patient.birthDate`` -> ``date``, ``Encounter.subject`` -> ``Reference``).
R4 and R4B use ``fhir.resources.R4B``; R5 uses the package default.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gateway.profiles.fhir_model import FhirVersion

PRIMITIVE_TYPES = frozenset(
    {
        "boolean", "integer", "integer64", "decimal", "string", "markdown", "code", "id", "uri",
        "url", "canonical", "oid", "uuid", "base64Binary", "date", "dateTime", "instant", "time",
        "positiveInt", "unsignedInt", "xhtml",
    }
)  # fmt: skip
DATE_TYPES = frozenset({"date", "dateTime", "instant"})
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,),
    "integer": (int,),
    "positiveInt": (int,),
    "unsignedInt": (int,),
    "integer64": (int, str),  # a JSON string in R5, a number in older writers
    "decimal": (int, float),
}
"""The JSON type of each primitive (FHIR JSON format); every other primitive is a string. A value
of another type (an MRN written as a number) is refused: no rule could treat it as text."""
RESOURCE = "Resource"

_ANNOTATION_TO_PRIMITIVE = {
    "Boolean": "boolean", "Integer": "integer", "Integer64": "integer64", "Decimal": "decimal",
    "String": "string", "Markdown": "markdown", "Code": "code", "Id": "id", "Uri": "uri",
    "Url": "url", "Canonical": "canonical", "Oid": "oid", "Uuid": "uuid",
    "Base64Binary": "base64Binary", "Date": "date", "DateTime": "dateTime", "Instant": "instant",
    "Time": "time", "PositiveInt": "positiveInt", "UnsignedInt": "unsignedInt", "Xhtml": "xhtml",
}  # fmt: skip


@dataclass(frozen=True)
class ElementDef:
    """One element of a complex type: its FHIR type and whether it repeats."""

    name: str
    type_name: str
    is_list: bool
    model: Any = field(default=None, compare=False, repr=False)  # complex types only
    is_primitive: bool = field(init=False, compare=False, repr=False)
    json_types: tuple[type, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_primitive", self.type_name in PRIMITIVE_TYPES)
        allowed = JSON_TYPES.get(self.type_name, (str,)) if self.is_primitive else (dict,)
        object.__setattr__(self, "json_types", (*allowed, type(None)))


@dataclass(frozen=True)
class TypeDef:
    name: str
    elements: dict[str, ElementDef]


def _package(version: FhirVersion) -> str:
    return "fhir.resources" if version is FhirVersion.R5 else "fhir.resources.R4B"


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner annotation, is_list) from Optional[List[X]] / X | None / Annotated."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            non_none = [a for a in args if a is not type(None)]
            annotation = non_none[0]
            continue
        if origin in (list, typing.List):  # noqa: UP006
            is_list = True
            annotation = args[0]
            continue
        return annotation, is_list


def _element_type(annotation: Any) -> tuple[str, Any]:
    """FHIR type name and (for complex types) the model class path."""
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in typing.get_args(annotation)[1:]:
            name = _ANNOTATION_TO_PRIMITIVE.get(type(meta).__name__)
            if name:
                return name, None
        base = typing.get_args(annotation)[0]
        return ("boolean" if base is bool else "string"), None
    if annotation is bool:
        return "boolean", None
    klass = getattr(annotation, "_model_klass", None)
    if klass is not None:
        type_name = annotation.__name__.removesuffix("Type")
        if type_name in ("Resource", "FHIRPrimitiveExtension"):
            return RESOURCE if type_name == "Resource" else "Element", klass
        return type_name, klass
    return "string", None


def _load_class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class Schema:
    """Type table for one FHIR version; TypeDefs are built lazily and cached."""

    def __init__(self, version: FhirVersion) -> None:
        self.version = version
        self._package = importlib.import_module(_package(version))
        self._types: dict[str, TypeDef | None] = {}
        self._by_element: dict[int, TypeDef] = {}
        self._keep: list[ElementDef] = []
        self._names: list[str] | None = None

    def resource(self, resource_type: str) -> TypeDef | None:
        """The TypeDef of a resource type, None when the version does not define it."""
        if resource_type not in self._types:
            try:
                klass = self._package.get_fhir_model_class(resource_type)
            except (KeyError, ValueError, AttributeError, ImportError):
                klass = None
            base = importlib.import_module(f"{_package(self.version)}.resource").Resource
            if (
                klass is None
                or klass.__resource_type__ != resource_type
                or not issubclass(klass, base)
                or resource_type in ("Resource", "DomainResource")
            ):
                self._types[resource_type] = None
            else:
                self._types[resource_type] = self._build(resource_type, klass, is_resource=True)
        return self._types[resource_type]

    def datatype(self, name: str) -> TypeDef | None:
        """The TypeDef of a complex data type or backbone element (``Identifier``,
        ``PatientContact``), None for resources, primitives and unknown names."""
        key = f"type:{name}"
        if key not in self._types:
            try:
                klass = self._package.get_fhir_model_class(name)
            except (KeyError, ValueError, AttributeError, ImportError):
                klass = None
            base = importlib.import_module(f"{_package(self.version)}.resource").Resource
            if klass is None or name in PRIMITIVE_TYPES or issubclass(klass, base):
                self._types[key] = None
            else:
                self._types[key] = self._build(name, klass, is_resource=False)
        return self._types[key]

    def type_names(self) -> list[str]:
        """Every resource, data type and backbone element name of the version (no imports)."""
        if self._names is None:
            types = importlib.import_module(f"{_package(self.version)}.fhirtypes")
            self._names = sorted(
                n.removesuffix("Type")
                for n in dir(types)
                if n.endswith("Type") and hasattr(getattr(types, n), "get_model_klass")
            )
        return self._names

    def complex(self, element: ElementDef) -> TypeDef:
        by_element = self._by_element.get(id(element))
        if by_element is not None:
            return by_element
        key = f"{element.type_name}@{element.model}"
        cached = self._types.get(key)
        if cached is None:
            klass = _load_class(element.model) if isinstance(element.model, str) else element.model
            cached = self._build(element.type_name, klass, is_resource=False)
            self._types[key] = cached
        self._keep.append(element)  # ids stay valid: the element is never freed
        self._by_element[id(element)] = cached
        return cached

    @staticmethod
    def _build(name: str, klass: Any, *, is_resource: bool) -> TypeDef:
        elements: dict[str, ElementDef] = {}
        for field_name, info in klass.model_fields.items():
            extra = info.json_schema_extra or {}
            alias = info.alias or field_name
            if alias.startswith("_"):  # primitive extensions: _birthDate
                elements[alias] = ElementDef(alias, "Element", False, _primitive_ext_model())
                continue
            if not isinstance(extra, dict) or not extra.get("element_property"):
                continue
            inner, is_list = _unwrap(info.annotation)
            type_name, model = _element_type(inner)
            elements[alias] = ElementDef(alias, type_name, is_list, model)
        elements.pop("resourceType", None)
        if is_resource:  # only resources carry resourceType; a data type with one is invalid
            elements["resourceType"] = ElementDef("resourceType", "code", False)
        return TypeDef(name, elements)


@lru_cache(maxsize=1)
def _primitive_ext_model() -> str:
    return "fhir.resources.R4B.element.Element"


@lru_cache(maxsize=4)
def schema_for(version: FhirVersion) -> Schema:
    """One Schema per version per process (the tables are immutable once built)."""
    return Schema(version)
