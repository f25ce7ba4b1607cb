"""FHIR de-identification, linked to the DICOM path through one profile and one key.

Entry points
------------
* :func:`deidentify_fhir` (preview, tests): one resource or Bundle in, the same form out; pure.
* :class:`gateway.pipeline.fhir_stages.FhirProcessor`: the pipeline's FHIR stages (parse ->
  resolve patient -> de-identify -> validate -> provenance); a payload becomes a flat list of
  resources, the same for every intake.
* :func:`gateway.fhir.batch.run_fhir_batch` (CLI): FHIR files -> ``<output>/fhir/<Type>.ndjson``
  + quarantine. It runs the pipeline's stages, so it is not imported here (this package sits
  below the pipeline: importing it must not import the pipeline back).

What joins with the DICOM (same key, any process, any day)
-----------------------------------------------------------
* ``Patient.identifier`` in a system declared in ``linkage.identity.namespaces[].fhir_systems``:
  value = ``linkage.person(ref).patient_id`` = the DICOM PatientID of the same person; the
  system is kept, or replaced by ``fhir.patient_identifier_system`` when the profile sets one.
* ``Patient.id`` = the same ``patient_id``; every reference to the patient follows.
* ImagingStudy ``urn:oid:`` identifiers, ``series.uid``, ``series.instance.uid``:
  ``pseudonymizer.uid(original)``; accession numbers (identifier type ACSN, ServiceRequest
  identifiers, ``basedOn.identifier``): ``pseudonymizer.accession(value)``.
* Every date of a resource that refers to a patient: that patient's ``date_offset_days`` (or the
  year only when ``linkage.dates.method`` is ``year-only``), exactly as the DICOM dates.

Patients are resolved through a :class:`PatientResolver`; the batch builds an in-memory index in
a first pass, a persistent identity index can implement the same protocol later.
"""

from gateway.fhir.api import deidentify_fhir, deidentify_fhir_with_report
from gateway.fhir.resolver import ChainedResolver, InMemoryPatientIndex, PatientResolver

__all__ = [
    "ChainedResolver",
    "InMemoryPatientIndex",
    "PatientResolver",
    "deidentify_fhir",
    "deidentify_fhir_with_report",
]
