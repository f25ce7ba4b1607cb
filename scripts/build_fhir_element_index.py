"""Build gateway/fhir/_standard/elements.json: every FHIR type's elements and their types.

Usage: python scripts/build_fhir_element_index.py

The profile compiler checks rule paths (``Patient.name.family``, ``*.description``) against
this index; reading the same facts from fhir.resources at start-up imports a model module per
type (seconds). The index is made from the tables the de-identifier itself walks
(gateway.fhir.schema), for the installed fhir.resources; tests/test_profile_compiler.py checks
it against them.
"""

from __future__ import annotations

import json

import fhir.resources

from gateway.fhir.element_index import INDEX, index_key
from gateway.fhir.schema import RESOURCE, Schema, TypeDef
from gateway.profiles.fhir_model import FhirVersion


def _types(schema: Schema) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(resource type names, type name -> element -> element type name)."""
    resources: list[str] = []
    types: dict[str, dict[str, str]] = {}
    pending: list[TypeDef] = []
    for name in schema.type_names():
        typedef = schema.resource(name)
        if typedef is not None:
            resources.append(name)
        else:
            typedef = schema.datatype(name)
        if typedef is not None:
            pending.append(typedef)
    while pending:
        typedef = pending.pop()
        if typedef.name in types:
            continue
        types[typedef.name] = {  # _birthDate & co are implied by their primitive (Element)
            n: e.type_name for n, e in sorted(typedef.elements.items()) if not n.startswith("_")
        }
        for element in typedef.elements.values():
            if not element.is_primitive and element.type_name != RESOURCE:
                pending.append(schema.complex(element))
    return sorted(resources), types


def build() -> dict[str, object]:
    resources: dict[str, list[str]] = {}
    types: dict[str, dict[str, dict[str, str]]] = {}
    for version in (FhirVersion.R4, FhirVersion.R5):
        key = index_key(version)
        resources[key], types[key] = _types(Schema(version))
    return {"fhir.resources": fhir.resources.__version__, "resources": resources, "types": types}


def render(data: dict[str, object]) -> str:
    """One type per line: reviewable diffs when fhir.resources changes."""
    out = ['{"fhir.resources": ' + json.dumps(data["fhir.resources"]) + ",", ' "resources": {']
    resources = data["resources"]
    types = data["types"]
    assert isinstance(resources, dict) and isinstance(types, dict)
    out.append(
        ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(resources.items()))
    )
    out.append(" },")
    out.append(' "types": {')
    blocks = []
    for key, table in sorted(types.items()):
        rows = ",\n".join(f"   {json.dumps(n)}: {json.dumps(e)}" for n, e in sorted(table.items()))
        blocks.append(f"  {json.dumps(key)}: {{\n{rows}\n  }}")
    out.append(",\n".join(blocks))
    out.append(" }")
    out.append("}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    INDEX.write_text(render(build()), encoding="utf-8")
    print(f"wrote {INDEX}")
