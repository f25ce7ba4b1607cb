"""FHIR de-identification, linked to the DICOM path through one profile and one key.

Entry points
------------
* :class:`gateway.pipeline.fhir_stages.FhirProcessor` (every intake, through the runner): a
  resource, a Bundle or an NDJSON line in, a flat list of de-identified resources out.
* :func:`deidentify_fhir` (preview): one resource or Bundle in, the same form out; pure.

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

Patients are resolved through a :class:`PatientResolver`: a directory run's in-memory index
(built in a first pass, :mod:`gateway.fhir.sniff`) or the service's persistent identity index.
"""

# The package imports nothing itself: its modules are imported by name (gateway.fhir.bundle,
# gateway.fhir.engine, ...), so importing one never pulls in the others (and no cycle through
# the package runs back into the profile compiler).
