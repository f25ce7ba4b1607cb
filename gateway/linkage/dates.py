"""Date shifting and generalisation shared by DICOM (DA/DT) and FHIR (date/dateTime/instant).

One per-person offset in days; partial dates keep their precision. Returns None when the input
is not a date we understand, so callers decide (DICOM removes, FHIR redacts): never guess.
"""

from __future__ import annotations

import datetime as dt
import re

_DICOM_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")
_FHIR_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(.*)$")
# What may follow the date: a DT time of day and offset / a FHIR time and zone. Anything else
# (a second date of a range, text) makes the value unparseable: callers remove it.
_DICOM_TIME = re.compile(r"^(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?([+-]\d{4})?$")
_FHIR_TIME = re.compile(r"^T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$")


def _shift_parts(
    year: str, month: str | None, day: str | None, offset_days: int
) -> tuple[str, str | None, str | None] | None:
    try:
        base = dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    try:
        shifted = base + dt.timedelta(days=offset_days)
    except OverflowError:
        return None
    return (
        f"{shifted.year:04d}",
        f"{shifted.month:02d}" if month else None,
        f"{shifted.day:02d}" if day else None,
    )


def shift_dicom_date(value: str, offset_days: int) -> str | None:
    """Shift a DA or DT value (``YYYY[MM[DD]]`` + any time/zone suffix, kept as is)."""
    value = value.strip()
    match = _DICOM_DT.match(value)
    if not match:
        return None
    year, month, day, rest = match.groups()
    if rest and (not day or not _DICOM_TIME.match(rest)):
        return None
    parts = _shift_parts(year, month, day, offset_days)
    if parts is None:
        return None
    return "".join(p for p in parts if p) + (rest or "")


def shift_fhir_date(value: str, offset_days: int) -> str | None:
    """Shift a FHIR date/dateTime/instant, keeping precision, time and timezone."""
    match = _FHIR_DATE.match(value.strip())
    if not match:
        return None
    year, month, day, rest = match.groups()
    if rest and (not day or not _FHIR_TIME.match(rest)):
        return None
    parts = _shift_parts(year, month, day, offset_days)
    if parts is None:
        return None
    return "-".join(p for p in parts if p) + (rest or "")


def dicom_year_only(value: str) -> str | None:
    """Safe Harbor: keep the year only. DA/DT become ``YYYY0101`` (a valid DA)."""
    match = _DICOM_DT.match(value.strip())
    return f"{match.group(1)}0101" if match else None


def fhir_year_only(value: str) -> str | None:
    match = _FHIR_DATE.match(value.strip())
    return match.group(1) if match else None
