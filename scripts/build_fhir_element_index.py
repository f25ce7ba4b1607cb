"""Build gateway/fhir/_standard/resource_elements.json: the elements of every resource type.

Usage: python scripts/build_fhir_element_index.py

A profile rule on any resource (``*.description``) is checked against this index; building it
at run time would import every fhir.resources model (seconds per version). The index is made
from the same tables the de-identifier walks (gateway.fhir.schema), for the installed
fhir.resources; tests/test_profile_compiler.py checks it against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import fhir.resources

from gateway.fhir.schema import Schema, index_key
from gateway.profiles.fhir_model import FhirVersion

OUT = (
    Path(__file__).resolve().parent.parent
    / "gateway"
    / "fhir"
    / "_standard"
    / "resource_elements.json"
)


def build() -> dict[str, object]:
    tables: dict[str, dict[str, list[str]]] = {}
    for version in (FhirVersion.R4, FhirVersion.R5):
        schema = Schema(version)
        tables[index_key(version)] = {
            name: sorted(n for n in typedef.elements if not n.startswith("_"))
            for name in schema.type_names()
            if (typedef := schema.resource(name)) is not None
        }
    return {"fhir.resources": fhir.resources.__version__, "resources": tables}


def render(data: dict[str, object]) -> str:
    """One resource type per line: reviewable diffs when fhir.resources changes."""
    tables = data["resources"]
    assert isinstance(tables, dict)
    parts = []
    for key, resources in sorted(tables.items()):
        rows = ",\n".join(
            f"    {json.dumps(n)}: {json.dumps(e)}" for n, e in sorted(resources.items())
        )
        parts.append(f"  {json.dumps(key)}: {{\n{rows}\n  }}")
    head = json.dumps(data["fhir.resources"])
    return '{"fhir.resources": ' + head + ', "resources": {\n' + ",\n".join(parts) + "\n}}\n"


if __name__ == "__main__":
    OUT.write_text(render(build()), encoding="utf-8")
    print(f"wrote {OUT}")
