"""Profiles: the privacy officer's rules for DICOM, FHIR and linkage, as validated data."""

from gateway.profiles.loader import load_profile, parse_profile
from gateway.profiles.model import Action, Profile, ProfileOption

__all__ = ["Action", "Profile", "ProfileOption", "load_profile", "parse_profile"]
