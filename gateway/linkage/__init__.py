"""The pseudonym/linkage core shared by DICOM and FHIR.

Everything that must come out identical in both standards (patient pseudonym, UIDs, accession
number, per-patient date offset) is derived here, and only here, from a keyed HMAC.
"""

from gateway.linkage.keys import KeyRing, PseudonymKey, load_key
from gateway.linkage.pseudonym import PersonRef, Pseudonymizer

__all__ = ["KeyRing", "PersonRef", "PseudonymKey", "Pseudonymizer", "load_key"]
