"""Build gateway/dicom/_standard/iod_attribute_types.json: the attribute types of every IOD.

Usage: python scripts/build_iod_types.py DIR [--edition 2026b]

DIR holds the DICOM standard's IOD/module tables as extracted by innolitics/dicom-standard
(MIT; ``standard/``: ``sops.json``, ``ciods.json``, ``ciod_to_modules.json``,
``module_to_attributes.json``) or the same extraction as reduced by highdicom
(``src/highdicom/_standard/``: ``sop_class_iod_map.json``, ``iod_module_map.json``,
``module_attribute_map.json``, MIT, made by highdicom's ``bin/create_iods_modules.py`` from the
innolitics files; its README names the edition). The shipped file was built from highdicom
0.28.2's copy (edition 2026b): innolitics' own ``module_to_attributes.json`` is over 20 MB.

What it keeps (the product reads only the output, see gateway/dicom/iod.py):
- ``sop_classes``: SOP Class UID -> IOD id.
- ``iods``: IOD id -> type -> space-separated top-level tags. Every module of the IOD counts,
  mandatory, conditional (C) and user-optional (U) alike: an instance that carries an attribute
  carries a module that defines it, and which C/U modules are present cannot be told from the
  tables. Where modules disagree the strictest type wins (1 > 1C > 2 > 2C > 3), since a value
  that satisfies the strictest satisfies them all.
- ``nested``: type -> space-separated ``SEQUENCE/TAG`` pairs: an attribute's type inside the
  sequence that directly contains it (the macro's type), strictest over every module and IOD.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword

TYPES = ("1", "1C", "2", "2C", "3")  # strictest first
RANK = {t: i for i, t in enumerate(TYPES)}
OUT = (
    Path(__file__).resolve().parent.parent
    / "gateway"
    / "dicom"
    / "_standard"
    / "iod_attribute_types.json"
)

HIGHDICOM_FILES = ("sop_class_iod_map.json", "iod_module_map.json", "module_attribute_map.json")
INNOLITICS_FILES = ("sops.json", "ciods.json", "ciod_to_modules.json", "module_to_attributes.json")
Path_ = tuple[str, ...]  # tags (8 hex digits) from the top level down to the attribute


def _load(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def read_innolitics(
    folder: Path,
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[tuple[Path_, str]]]]:
    ciod_ids = {c["name"]: c["id"] for c in _load(folder, "ciods.json")}
    sops = {
        s["id"]: ciod_ids[s["ciod"]] for s in _load(folder, "sops.json") if s["ciod"] in ciod_ids
    }
    iods: dict[str, list[str]] = defaultdict(list)
    for row in _load(folder, "ciod_to_modules.json"):
        iods[row["ciodId"]].append(row["moduleId"])
    modules: dict[str, list[tuple[Path_, str]]] = defaultdict(list)
    for row in _load(folder, "module_to_attributes.json"):
        tags = tuple(t.upper().replace("XX", "00") for t in row["path"].split(":")[1:])
        modules[row["moduleId"]].append((tags, str(row["type"])))
    return sops, iods, modules


def read_highdicom(
    folder: Path,
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[tuple[Path_, str]]]]:
    sops = dict(_load(folder, "sop_class_iod_map.json"))
    iods = {
        iod: [m["key"] for m in mods] for iod, mods in _load(folder, "iod_module_map.json").items()
    }
    modules: dict[str, list[tuple[Path_, str]]] = defaultdict(list)
    for module, rows in _load(folder, "module_attribute_map.json").items():
        for row in rows:
            tags = [tag_for_keyword(k) for k in [*row["path"], row["keyword"]]]
            if None in tags:
                continue  # a keyword newer than pydicom's dictionary: cannot be met in data
            modules[module].append((tuple(f"{t:08X}" for t in tags), str(row["type"])))
    return sops, iods, modules


def _stricter(old: str | None, new: str) -> str:
    return new if old is None or RANK[new] < RANK[old] else old


def _by_type(types: dict[str, str]) -> dict[str, str]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for key, kind in types.items():
        grouped[kind].append(key)
    return {t: " ".join(sorted(grouped[t])) for t in TYPES if grouped[t]}


def reduce(
    sops: dict[str, str], iods: dict[str, list[str]], modules: dict[str, list[tuple[Path_, str]]]
) -> dict[str, Any]:
    top: dict[str, dict[str, str]] = {}
    nested: dict[str, str] = {}
    for iod, module_ids in sorted(iods.items()):
        types: dict[str, str] = {}
        for module in module_ids:
            for tags, kind in modules.get(module, []):
                if kind not in RANK:
                    continue  # "None": a table without a type column (print/normalised IODs)
                if len(tags) == 1:
                    types[tags[0]] = _stricter(types.get(tags[0]), kind)
                else:
                    pair = f"{tags[-2]}/{tags[-1]}"
                    nested[pair] = _stricter(nested.get(pair), kind)
        top[iod] = _by_type(types)
    return {
        "sop_classes": {uid: iod for uid, iod in sorted(sops.items()) if iod in top},
        "iods": top,
        "nested": _by_type(nested),
    }


def blob_ids(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Git blob ids of the inputs: whoever rebuilds can tell they read the same files."""
    out = {}
    for name in names:
        data = (folder / name).read_bytes()
        out[name] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return out


def edition_of(folder: Path) -> str | None:
    readme = folder / "README.md"
    if readme.is_file():
        found = re.search(
            r"version (\d{4}[a-e]) of the standard", readme.read_text(encoding="utf-8")
        )
        if found:
            return found.group(1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--edition", help="the standard's edition (default: from DIR/README.md)")
    args = parser.parse_args()
    folder: Path = args.folder
    highdicom = (folder / "module_attribute_map.json").is_file()
    sops, iods, modules = (read_highdicom if highdicom else read_innolitics)(folder)
    edition = args.edition or edition_of(folder)
    if not edition:
        parser.error("say which edition of the standard DIR holds (--edition)")
    via = "as reduced by highdicom, MIT" if highdicom else "MIT"
    inputs = HIGHDICOM_FILES if highdicom else INNOLITICS_FILES
    table = {
        "source": f"DICOM PS3.3 IOD and module tables (via innolitics/dicom-standard, {via})",
        "edition": edition,
        "inputs": blob_ids(folder, inputs),
        "modules": "all of an IOD's modules count (M, C and U); the strictest type wins",
        **reduce(sops, iods, modules),
    }
    OUT.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(table['sop_classes'])} SOP classes, {len(table['iods'])} IODs)")


if __name__ == "__main__":
    main()
