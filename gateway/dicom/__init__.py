"""DICOM de-identification: PS3.15 Annex E rules compiled from the profile, applied recursively."""
