"""Free text under Clean on a real series: header walk per instance, one patient, N slices.

    python benchmarks/dicom_text_series.py [--instances 200] [--rounds 3] [--profile research]

pydicom's CT_small, copied ``--instances`` times into one series of one patient, with the
descriptors a real series carries (StudyDescription, SeriesDescription, ImageComments naming a
referring doctor, PatientComments); each round is a new patient, so its first instance misses
every cache (the model runs, the patient's deny-list is compiled) and the others hit them.
CPU time of ``DicomDeidentifier.deidentify`` alone (the header walk, where free text is
cleaned), in one process, after a warm-up that loads the NLP model. Compare ``--profile basic`` (which does
not clean descriptors) and an older tree (``PYTHONPATH=...``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from io import BytesIO

import pydicom
from pydicom.data import get_testdata_file

TEST_KEY = "benchmark-test-key-not-a-secret-0123456"  # 40 characters, for benchmarks only


def template() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds.PatientName = "HOLLOWAY^MARGARETHE"
    ds.PatientBirthDate = "19470312"
    ds.PatientAddress = "1428 Elmwood Terrace^Springfield^IL^62704"
    ds.StudyDescription = "CT CHEST W/O CONTRAST"
    ds.SeriesDescription = "AX 5mm LUNG"
    ds.ImageComments = "Referred by Dr. Albert Finch"
    ds.PatientComments = "Claustrophobic, mother present"
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="research")
    args = parser.parse_args()
    os.environ.setdefault("DEID_GATEWAY_KEY", TEST_KEY)
    from gateway.dicom.deidentify import DicomDeidentifier
    from gateway.dicom.rules import RuleSet
    from gateway.linkage.context import Linkage
    from gateway.linkage.keys import load_key
    from gateway.profiles.loader import load_profile

    profile = load_profile(args.profile)
    linkage = Linkage(profile, load_key(profile.linkage.key_id, create=False))
    deidentifier = DicomDeidentifier(RuleSet(profile), linkage)
    raw = template()
    deidentifier.deidentify(pydicom.dcmread(BytesIO(raw)))  # warm-up: imports, the NLP model
    per_instance = []
    for round_number in range(args.rounds):
        series = [pydicom.dcmread(BytesIO(raw)) for _ in range(args.instances)]
        for number, ds in enumerate(series, start=1):
            ds.PatientID = f"MRN{round_number}4471932"  # a new patient: the caches start cold
            ds.InstanceNumber = number
        started = time.process_time()
        for ds in series:
            deidentifier.deidentify(ds)
        per_instance.append(1000 * (time.process_time() - started) / args.instances)
    rounds = ", ".join(f"{ms:.3f}" for ms in per_instance)
    print(
        f"profile {profile.name}: header walk {statistics.median(per_instance):.3f} ms CPU per "
        f"instance, median of {args.rounds} rounds of {args.instances} ({rounds})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
