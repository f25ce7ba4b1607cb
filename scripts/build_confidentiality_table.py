"""Build gateway/dicom/_standard/ps3.15_e1_1.json from the machine-readable Table E.1-1.

Usage: python scripts/build_confidentiality_table.py ../shared/reference/ps3.15-table-e.1-1.json

The product never reads the reference at run time: this script encodes the standard's facts in
the project's own format once, and tests/test_standard_table.py cross-checks the two.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydicom.datadict import keyword_for_tag

EDITION = "2024b"
COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_longitudinal_full_dates",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
OUT = Path(__file__).resolve().parent.parent / "gateway" / "dicom" / "_standard" / "ps3.15_e1_1.json"


def convert(rows: list[dict[str, str]]) -> dict[str, object]:
    out = []
    for row in rows:
        tag = row["tag"].upper().replace(" ", "")
        keyword = ""
        if "X" not in tag[1:10] and "G" not in tag:
            keyword = keyword_for_tag(int(tag[1:5] + tag[6:10], 16)) or ""
        options = {COLUMNS[k]: v for k, v in row.items() if k in COLUMNS and v}
        out.append(
            {
                "tag": "(GGGG,EEEE)ODD" if "WHERE" in tag else tag,
                "keyword": keyword,
                "name": " ".join(row["name"].split("(see")[0].split()),
                "in_std_composite_iod": row["stdCompIOD"] == "Y",
                "basic": row["basicProfile"],
                "options": dict(sorted(options.items())),
            }
        )
    out.sort(key=lambda r: r["tag"])
    return {
        "source": "DICOM PS3.15 Annex E Table E.1-1 (via innolitics/dicom-standard, MIT)",
        "edition": EDITION,
        "rows": out,
    }


if __name__ == "__main__":
    reference = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    OUT.write_text(json.dumps(convert(reference), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
