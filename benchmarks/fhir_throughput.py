"""FHIR throughput, one core: structured rules (no NLP) vs a plain fhir.resources round trip,
and NLP (Presidio) spans/s separately.

    DEID_GATEWAY_KEY=$(python -c 'print("x"*40)') python benchmarks/fhir_throughput.py [DIR] [--repeat N]

DIR defaults to ../shared/data/fhir-synthea-r4 (Synthea R4 bundles). Resources are taken out of
their bundles (the batch's flat mode); the patient index is built first, as in a batch run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.fhir.bundle import engine_for
from gateway.fhir.references import ReferenceMode
from gateway.fhir.sniff import build_index
from gateway.fhir.validation import validation_issues
from gateway.linkage.context import Linkage
from gateway.linkage.keys import load_key
from gateway.profiles import load_profile
from gateway.profiles.fhir_model import FhirVersion, ValidationMode
from gateway.profiles.model import Profile

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared/data/fhir-synthea-r4"


def _profile(nlp: bool, validation: ValidationMode) -> Profile:
    profile = load_profile("research")
    fhir = profile.fhir.model_copy(
        update={
            "validation": validation,
            "free_text": profile.fhir.free_text.model_copy(update={"nlp": nlp}),
        }
    )
    return profile.model_copy(update={"fhir": fhir})


def _timed(label: str, n: int, fn: Callable[[], Any]) -> dict[str, Any]:
    fn()  # warm-up: schema tables, caches, model classes
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    row = {
        "benchmark": label,
        "items": n,
        "seconds": round(seconds, 3),
        "per_s": round(n / seconds),
    }
    print(f"{label:<48} {n:>7} in {seconds:7.3f} s = {n / seconds:9.0f} /s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("DEID_GATEWAY_KEY", "benchmark-key-" + "0" * 32)

    paths = sorted(args.directory.glob("*.json"))
    if not paths:
        raise SystemExit(f"no FHIR JSON in {args.directory}")
    resources: list[dict[str, Any]] = []
    for path in paths:
        bundle = json.loads(path.read_text())
        resources += [e["resource"] for e in bundle.get("entry", [])]
    resources *= args.repeat
    n = len(resources)
    rows = []

    for validation in (ValidationMode.NONE, ValidationMode.OUTPUT):
        profile = _profile(nlp=False, validation=validation)
        linkage = Linkage(profile, load_key(profile.linkage.key_id, create=False))
        engine = engine_for(profile, linkage)
        mapper = engine.mapper(build_index(paths, linkage))
        check = validation is ValidationMode.OUTPUT

        def structured(engine: Any = engine, mapper: Any = mapper, check: bool = check) -> None:
            for resource in resources:
                out = engine.resource(resource, mapper, ReferenceMode.FLAT).resource
                if check:
                    validation_issues(out, FhirVersion.R4)

        label = "structured rules (no NLP)" + (" + output validation" if check else "")
        rows.append(_timed(label, n, structured))

    from fhir.resources.R4B import get_fhir_model_class

    def plain() -> None:
        for resource in resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(
                resource
            ).model_dump_json()

    rows.append(_timed("plain fhir.resources R4B parse + serialise", n, plain))

    # NLP separately: Presidio over the distinct clinical notes
    profile = _profile(nlp=True, validation=ValidationMode.NONE)
    linkage = Linkage(profile, load_key(profile.linkage.key_id, create=False))
    engine = engine_for(profile, linkage)
    notes = sorted(
        {
            base64.b64decode(a["data"]).decode("utf-8", "replace")
            for r in resources
            if r["resourceType"] == "DocumentReference"
            for c in r.get("content", [])
            for a in [c.get("attachment", {})]
            if a.get("contentType") == "text/plain" and a.get("data")
        }
    )[:200]
    from gateway.text.context import PhiContext

    presidio = engine.text.registry
    counts: Counter[str] = Counter()

    def nlp() -> None:
        counts.clear()
        for note in notes:
            counts.update(s.entity for s in presidio.find(note, PhiContext()))

    row = _timed("NLP texts (Presidio + patterns)", len(notes), nlp)
    spans = sum(counts.values())
    row["spans"] = spans
    row["spans_per_s"] = round(spans / row["seconds"]) if row["seconds"] else 0
    print(f"{'NLP spans found':<48} {spans:>7} = {row['spans_per_s']:9} spans/s")
    rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
