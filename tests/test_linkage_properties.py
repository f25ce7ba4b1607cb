"""Properties of the linkage core (issue 2): keyed, deterministic, valid, collision-free.

Expectations come from the standards, not from running the code: PS3.5 B.2 / 9.1 for UIDs,
RFC 9562 for the version 8 and variant bits, PS3.5 6.2 for the SH / LO value representations.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom.valuerep import validate_value

from gateway.linkage.context import Linkage
from gateway.linkage.dates import shift_dicom_date, shift_fhir_date
from gateway.linkage.identity import IdentityMap, IdentityNamespace
from gateway.linkage.keys import PseudonymKey
from gateway.linkage.pseudonym import PersonRef, Pseudonymizer
from gateway.profiles.model import Profile

# PS3.5 9.1: components of digits, no leading zero (except "0" itself), separated by dots.
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX = 64  # PS3.5 6.2, VR UI
SH_MAX = 16  # PS3.5 6.2, VR SH
LO_MAX = 64  # PS3.5 6.2, VR LO
# PS3.5 6.1.2.1 default repertoire (G0 of ISO 646): 0x20-0x7E; SH/LO exclude backslash.
DICOM_TEXT_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\"}

KEY_A = PseudonymKey("a", bytes(range(32)))
KEY_B = PseudonymKey("b", bytes(range(1, 33)))
# Differs from KEY_A in one bit: a keyed PRF must still give unrelated outputs.
KEY_A_FLIP = PseudonymKey("a", bytes(range(31)) + bytes([31 ^ 0x01]))

keys = st.binary(min_size=32, max_size=64).map(lambda b: PseudonymKey("k", b))
dicom_uids = st.from_regex(r"\A(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){1,8}\Z")
any_text = st.text(max_size=80)
identifiers = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda s: s.strip() != "")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def uid_int(uid: str) -> int:
    assert uid.startswith("2.25.")
    return int(uid[len("2.25."):])


def assert_valid_uid(uid: str) -> None:
    assert UID_RE.fullmatch(uid), uid
    assert len(uid) <= UID_MAX
    assert uid.startswith("2.25.")
    number = uid_int(uid)
    assert 0 <= number < 2**128
    as_uuid = uuid.UUID(int=number)
    # RFC 9562: variant bits 10 in octet 8, version 8 (custom) in the high nibble of octet 6.
    assert as_uuid.variant == uuid.RFC_4122
    assert as_uuid.version == 8
    assert (number >> 62) & 0b11 == 0b10
    assert (number >> 76) & 0xF == 8


# --------------------------------------------------------------------------- determinism
@FAST
@given(key=keys, original=st.one_of(dicom_uids, any_text))
def test_uid_is_deterministic_across_instances(key: PseudonymKey, original: str) -> None:
    first = Pseudonymizer(key)
    fresh = Pseudonymizer(PseudonymKey(key.key_id, bytes(key.secret)))
    assert first.uid(original) == first.uid(original)
    assert first.uid(original) == fresh.uid(original)
    assert first.uuid(original) == fresh.uuid(original)


@FAST
@given(key=keys, ident=identifiers, namespace=st.sampled_from(["local-mrn", "hosp", "x:y"]))
def test_person_values_are_deterministic(key: PseudonymKey, ident: str, namespace: str) -> None:
    one, two = Pseudonymizer(key), Pseudonymizer(PseudonymKey("k", bytes(key.secret)))
    ref = PersonRef(namespace, ident)
    person_key = one.person_key(ref)
    assert person_key == two.person_key(PersonRef(namespace, ident))
    assert one.patient_id(person_key) == two.patient_id(person_key)
    assert one.date_offset_days(person_key) == two.date_offset_days(person_key)
    assert one.accession(ident, namespace) == two.accession(ident, namespace)


SUBPROCESS_INPUTS = [
    "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
    "1.2.3",
    "",
    "  1.2.3.4\x00",
    "Müller^Jürgen",
    "患者123",
    "x" * 200,
]

_CHILD = r"""
import json, sys
from gateway.linkage.keys import load_key
from gateway.linkage.pseudonym import PersonRef, Pseudonymizer
p = Pseudonymizer(load_key("default", create=False), date_shift_range_days=365)
out = {}
for value in json.loads(sys.argv[1]):
    pk = p.person_key(PersonRef("local-mrn", value))
    out[value] = [p.uid(value), p.uuid(value), pk, p.patient_id(pk), p.date_offset_days(pk),
                  p.accession(value, "ns")]
print(json.dumps(out))
"""


def test_outputs_equal_in_a_fresh_process(tmp_path) -> None:
    secret = bytes(range(100, 140))
    env = dict(os.environ)
    env["DEID_GATEWAY_KEY"] = "hex:" + secret.hex()
    env.pop("DEID_GATEWAY_KEY_DEFAULT", None)
    env["DEID_GATEWAY_KEY_DIR"] = str(tmp_path)
    env["PYTHONHASHSEED"] = "12345"  # a different str hash seed must not matter
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(SUBPROCESS_INPUTS)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)

    p = Pseudonymizer(PseudonymKey("default", secret), date_shift_range_days=365)
    assert set(theirs) == set(SUBPROCESS_INPUTS)
    for value in SUBPROCESS_INPUTS:
        pk = p.person_key(PersonRef("local-mrn", value))
        ours = [p.uid(value), p.uuid(value), pk, p.patient_id(pk), p.date_offset_days(pk),
                p.accession(value, "ns")]
        assert theirs[value] == ours


# --------------------------------------------------------------------------- UID validity
@settings(max_examples=200, deadline=None)
@given(key=keys, original=st.one_of(dicom_uids, any_text))
def test_every_generated_uid_is_valid(key: PseudonymKey, original: str) -> None:
    assert_valid_uid(Pseudonymizer(key).uid(original))


@FAST
@given(key=keys, original=st.one_of(dicom_uids, any_text))
def test_uuid_and_uid_carry_the_same_128_bits(key: PseudonymKey, original: str) -> None:
    p = Pseudonymizer(key)
    as_uuid = uuid.UUID(p.uuid(original))
    assert str(as_uuid) == p.uuid(original)  # canonical lower-case 8-4-4-4-12 form
    assert as_uuid.int == uid_int(p.uid(original))
    assert as_uuid.version == 8


def test_uid_of_a_uid_is_not_the_input() -> None:
    p = Pseudonymizer(KEY_A)
    original = "1.2.840.10008.5.1.4.1.1.2"
    assert p.uid(original) != original
    assert p.uid(p.uid(original)) != p.uid(original)


# --------------------------------------------------------------------------- collisions
@pytest.mark.slow
def test_no_uid_collisions_in_a_million_draws() -> None:
    p = Pseudonymizer(KEY_A)
    uid = p.uid
    n = 1_000_000
    seen = {uid(f"1.2.826.0.1.3680043.8.498.{i}") for i in range(n)}
    assert len(seen) == n


@pytest.mark.slow
def test_no_accession_collisions() -> None:
    # 16 Crockford characters = 80 bits: a collision among 3e5 values has p ~ 4e-14.
    p = Pseudonymizer(KEY_A)
    accession = p.accession
    n = 300_000
    seen = {accession(f"A{i:07d}") for i in range(n)}
    assert len(seen) == n


def test_domains_separate_kinds() -> None:
    """The same string as a UID, an accession and a patient gives unrelated pseudonyms."""
    p = Pseudonymizer(KEY_A)
    value = "12345"
    pk = p.person_key(PersonRef("local-mrn", value))
    outputs = {p.accession(value), p.patient_id(pk), p.identifier("", value), p.token("x", value)}
    assert len(outputs) == 4
    assert p.person_key(PersonRef("other", value)) != pk


# --------------------------------------------------------------------------- key separation
N_KEY_INPUTS = 10_000


def _bits_differing(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# Bits of a v8 UUID that are not fixed by the version (4) and variant (2) fields.
_FREE_MASK = ((1 << 128) - 1) ^ (0xF << 76) ^ (0b11 << 62)


@pytest.mark.parametrize("other", [KEY_B, KEY_A_FLIP], ids=["unrelated-key", "one-bit-key"])
def test_different_keys_give_unrelated_outputs(other: PseudonymKey) -> None:
    p, q = Pseudonymizer(KEY_A), Pseudonymizer(other)
    inputs = [f"1.3.6.1.4.1.5962.99.{i}" for i in range(N_KEY_INPUTS)]
    uids_p = [p.uid(i) for i in inputs]
    uids_q = [q.uid(i) for i in inputs]
    assert not set(uids_p) & set(uids_q)
    acc_p = {p.accession(i) for i in inputs}
    acc_q = {q.accession(i) for i in inputs}
    assert not acc_p & acc_q

    free_bits = _FREE_MASK.bit_count()
    assert free_bits == 122
    differing = sum(
        _bits_differing(uid_int(a) & _FREE_MASK, uid_int(b) & _FREE_MASK)
        for a, b in zip(uids_p, uids_q)
    )
    fraction = differing / (free_bits * N_KEY_INPUTS)
    # Binomial(1.22e6, 0.5): standard deviation of the fraction is ~0.00045.
    assert 0.49 < fraction < 0.51

    persons = [p.person_key(PersonRef("m", str(i))) for i in range(2000)]
    persons_q = [q.person_key(PersonRef("m", str(i))) for i in range(2000)]
    assert not set(persons) & set(persons_q)
    same_offset = sum(
        p.date_offset_days(a) == q.date_offset_days(b) for a, b in zip(persons, persons_q)
    )
    # Offsets are uniform over 730 values: agreement by chance is ~0.14 %.
    assert same_offset < 2000 * 0.02


# --------------------------------------------------------------------------- date offsets
@settings(max_examples=150, deadline=None)
@given(key=keys, ident=identifiers, range_days=st.integers(min_value=1, max_value=3650))
def test_date_offset_is_nonzero_and_within_range(
    key: PseudonymKey, ident: str, range_days: int
) -> None:
    p = Pseudonymizer(key, date_shift_range_days=range_days)
    offset = p.date_offset_days(p.person_key(PersonRef("local-mrn", ident)))
    assert isinstance(offset, int)
    assert offset != 0
    assert -range_days <= offset <= range_days


@pytest.mark.parametrize("range_days", [1, 3, 30, 365, 3650])
def test_date_offsets_cover_both_signs_and_the_range(range_days: int) -> None:
    p = Pseudonymizer(KEY_A, date_shift_range_days=range_days)
    n = 3000
    offsets = [p.date_offset_days(p.person_key(PersonRef("mrn", f"P{i}"))) for i in range(n)]
    assert all(o != 0 and -range_days <= o <= range_days for o in offsets)
    positive = sum(o > 0 for o in offsets)
    # Fair coin over 3000 persons: 0.5 +- 0.009 (1 sigma).
    assert 0.45 < positive / n < 0.55
    if range_days <= 3:
        # Every allowed offset occurs (2 * range values, >= 500 draws each on average).
        assert set(offsets) == set(range(-range_days, 0)) | set(range(1, range_days + 1))
    else:
        assert max(offsets) > range_days * 0.9
        assert min(offsets) < -range_days * 0.9


def test_zero_range_is_refused() -> None:
    with pytest.raises(ValueError):
        Pseudonymizer(KEY_A, date_shift_range_days=0)


# --------------------------------------------------------------------------- VR fit
def _fits_text_vr(value: str, vr: str, max_len: int) -> None:
    assert 0 < len(value) <= max_len
    assert set(value) <= DICOM_TEXT_CHARS
    assert value == value.strip()  # leading/trailing spaces are not significant in SH/LO
    validate_value(vr, value, pydicom_config.RAISE)


@FAST
@given(key=keys, value=any_text, namespace=any_text)
def test_accession_pseudonym_fits_sh(key: PseudonymKey, value: str, namespace: str) -> None:
    _fits_text_vr(Pseudonymizer(key).accession(value, namespace), "SH", SH_MAX)


@FAST
@given(
    key=keys,
    ident=identifiers,
    prefix=st.from_regex(r"\A[A-Z0-9-]{0,16}\Z"),  # the profile's patient_id_prefix pattern
)
def test_patient_id_fits_lo(key: PseudonymKey, ident: str, prefix: str) -> None:
    p = Pseudonymizer(key, patient_id_prefix=prefix)
    patient_id = p.patient_id(p.person_key(PersonRef("local-mrn", ident)))
    assert patient_id.startswith(prefix)
    _fits_text_vr(patient_id, "LO", LO_MAX)
    # PatientID is often also written into SH-sized places (e.g. OtherPatientIDs items).
    if not prefix:
        _fits_text_vr(patient_id, "SH", SH_MAX)


@FAST
@given(key=keys, rtype=st.sampled_from(["Patient", "ImagingStudy"]), logical=identifiers)
def test_resource_id_is_a_fhir_id(key: PseudonymKey, rtype: str, logical: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", Pseudonymizer(key).resource_id(rtype, logical))


# --------------------------------------------------------------------------- identity mapping
HOSP_SYSTEM = "urn:oid:1.2.3.4.5"


def _linkage_profile() -> Profile:
    return Profile.model_validate(
        {
            "name": "t",
            "version": "1",
            "linkage": {
                "dates": {"range_days": 100},
                "identity": {
                    "default_dicom_namespace": "local-mrn",
                    "namespaces": [
                        {"name": "hosp-mrn", "dicom_issuers": ["HOSP"],
                         "fhir_systems": [HOSP_SYSTEM]},
                        {"name": "local-mrn", "fhir_systems": ["http://hospital.example/mrn"]},
                    ],
                },
            },
        }
    )


@pytest.fixture(scope="module")
def linkage() -> Linkage:
    return Linkage(_linkage_profile(), KEY_A)


@FAST
@given(patient_id=identifiers)
def test_dicom_issuer_and_fhir_system_give_one_person(linkage: Linkage, patient_id: str) -> None:
    from_fhir = linkage.identity.from_fhir(HOSP_SYSTEM, patient_id)
    assert from_fhir is not None
    assert linkage.identity.from_dicom(patient_id, "HOSP") == from_fhir
    dicom_person = linkage.person_from_dicom(patient_id, "HOSP")
    fhir_person = linkage.person(from_fhir)
    assert dicom_person == fhir_person
    assert 1 <= abs(dicom_person.date_offset_days) <= 100


def test_default_namespace_joins_dicom_without_issuer(linkage: Linkage) -> None:
    ref = linkage.identity.from_fhir("http://hospital.example/mrn", "123")
    assert ref is not None
    assert linkage.person_from_dicom("123", None) == linkage.person(ref)
    assert linkage.person_from_dicom("123", "") == linkage.person(ref)
    assert linkage.person_from_dicom("123", "HOSP") != linkage.person(ref)


@FAST
@given(
    patient_id=identifiers,
    issuer=st.text(min_size=1, max_size=30).filter(lambda s: s.strip() not in ("", "HOSP")),
)
def test_unmapped_issuer_does_not_collide_with_mapped(
    linkage: Linkage, patient_id: str, issuer: str
) -> None:
    mapped = linkage.person_from_dicom(patient_id, "HOSP")
    default = linkage.person_from_dicom(patient_id, None)
    unmapped = linkage.person_from_dicom(patient_id, issuer)
    assert unmapped.person_key not in (mapped.person_key, default.person_key)
    assert unmapped.patient_id not in (mapped.patient_id, default.patient_id)


@pytest.mark.parametrize("issuer", ["hosp-mrn", "local-mrn", "HOSP-MRN"])
def test_issuer_named_like_a_namespace_is_not_that_namespace(linkage: Linkage, issuer: str) -> None:
    assert linkage.person_from_dicom("42", issuer) != linkage.person_from_dicom("42", "HOSP")
    assert linkage.person_from_dicom("42", issuer) != linkage.person_from_dicom("42", None)


def test_unmapped_fhir_system_is_not_a_person(linkage: Linkage) -> None:
    assert linkage.identity.from_fhir("urn:oid:9.9.9", "123") is None
    assert linkage.identity.from_fhir(None, "123") is None
    assert not linkage.identity.is_patient_system("urn:oid:9.9.9")
    assert linkage.identity.is_patient_system(HOSP_SYSTEM)


def test_issuer_and_id_split_differently_are_different_people() -> None:
    """An unmapped IssuerOfPatientID (LO) may contain any separator: no two people may meet."""
    identity = IdentityMap((IdentityNamespace("hosp-mrn", ("HOSP",)),), "local-mrn")
    p = Pseudonymizer(KEY_A)
    a = p.person_key(identity.from_dicom("2", "X|1"))
    b = p.person_key(identity.from_dicom("1|2", "X"))
    assert a != b


# --------------------------------------------------------------------------- dates.py
dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))
offsets = st.integers(min_value=-3650, max_value=3650).filter(lambda o: o != 0)
dicom_times = st.sampled_from(["", "12", "1230", "123045", "123045.5", "123045.123456"])
dicom_zones = st.sampled_from(["", "+0100", "-0500", "+0000"])
fhir_times = st.sampled_from(
    ["T12:30:45Z", "T12:30:45+01:00", "T00:00:00.000-05:00", "T23:59:59.123456Z"]
)


@settings(max_examples=150, deadline=None)
@given(day=dates, offset=offsets)
def test_shift_dicom_da_round_trips(day: dt.date, offset: int) -> None:
    text = day.strftime("%Y%m%d")
    shifted = shift_dicom_date(text, offset)
    assert shifted is not None
    assert len(shifted) == 8 and shifted.isdigit()
    assert dt.datetime.strptime(shifted, "%Y%m%d").date() == day + dt.timedelta(days=offset)
    assert shift_dicom_date(shifted, -offset) == text


@settings(max_examples=100, deadline=None)
@given(day=dates, offset=offsets, time=dicom_times, zone=dicom_zones)
def test_shift_dicom_dt_keeps_time_and_zone(
    day: dt.date, offset: int, time: str, zone: str
) -> None:
    text = day.strftime("%Y%m%d") + time + (zone if time else "")
    shifted = shift_dicom_date(text, offset)
    assert shifted is not None
    assert shifted[8:] == text[8:]
    assert shifted[:8] == (day + dt.timedelta(days=offset)).strftime("%Y%m%d")
    assert shift_dicom_date(shifted, -offset) == text


@settings(max_examples=100, deadline=None)
@given(day=dates, offset=offsets)
def test_shift_dicom_partial_dates_keep_precision(day: dt.date, offset: int) -> None:
    year_month = day.strftime("%Y%m")
    shifted = shift_dicom_date(year_month, offset)
    assert shifted is not None and len(shifted) == 6 and shifted.isdigit()
    _assert_month_reachable(day.year, day.month, int(shifted[:4]), int(shifted[4:]), offset)
    year = day.strftime("%Y")
    shifted_year = shift_dicom_date(year, offset)
    assert shifted_year is not None and len(shifted_year) == 4 and shifted_year.isdigit()
    assert abs(int(shifted_year) - day.year) <= abs(offset) // 365 + 1


def _assert_month_reachable(year: int, month: int, new_year: int, new_month: int, offset: int) -> None:
    """Some day of the original month, shifted by ``offset``, lies in the result month."""
    first = dt.date(year, month, 1)
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    lo, hi = first + dt.timedelta(days=offset), last + dt.timedelta(days=offset)
    new_first = dt.date(new_year, new_month, 1)
    new_last = (new_first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    assert new_first <= hi and lo <= new_last


@settings(max_examples=150, deadline=None)
@given(day=dates, offset=offsets, time=st.one_of(st.just(""), fhir_times))
def test_shift_fhir_date_round_trips_and_keeps_suffix(
    day: dt.date, offset: int, time: str
) -> None:
    text = day.isoformat() + time
    shifted = shift_fhir_date(text, offset)
    assert shifted is not None
    assert shifted[:10] == (day + dt.timedelta(days=offset)).isoformat()
    assert shifted[10:] == time
    assert shift_fhir_date(shifted, -offset) == text


@settings(max_examples=100, deadline=None)
@given(day=dates, offset=offsets)
def test_shift_fhir_partial_dates_keep_precision(day: dt.date, offset: int) -> None:
    shifted = shift_fhir_date(day.strftime("%Y-%m"), offset)
    assert shifted is not None and re.fullmatch(r"\d{4}-\d{2}", shifted)
    _assert_month_reachable(day.year, day.month, int(shifted[:4]), int(shifted[5:]), offset)
    shifted_year = shift_fhir_date(day.strftime("%Y"), offset)
    assert shifted_year is not None and re.fullmatch(r"\d{4}", shifted_year)


@pytest.mark.parametrize(
    "value",
    ["", "   ", "abc", "20241301", "20240230", "20230229", "2024-01-01", "2024010",
     "1/2/2024", "yesterday"],
)
def test_shift_dicom_date_garbage_is_none(value: str) -> None:
    assert shift_dicom_date(value, 10) is None


@pytest.mark.parametrize(
    "value",
    ["", "abc", "20240101", "2024-13-01", "2024-02-30", "2024-1-01", "2024-01-01 12:00",
     "01/02/2024"],
)
def test_shift_fhir_date_garbage_is_none(value: str) -> None:
    assert shift_fhir_date(value, 10) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("20240101 John Smith", id="da-trailing-name"),
        pytest.param("20240101-20240201", id="da-range-second-date-unshifted"),
        pytest.param("20240101abc", id="da-trailing-letters"),
        pytest.param("2024010112x", id="dt-bad-time"),
    ],
)
def test_shift_dicom_date_malformed_suffix_is_none(value: str) -> None:
    """Text after a date (a name, a second date of a range) must not pass through shifted."""
    assert shift_dicom_date(value, 10) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2024-01-01Tgarbage", id="fhir-garbage-time"),
        pytest.param("2024-01-01T12:00:00 John", id="fhir-trailing-text"),
        pytest.param("2024-01T12:00:00Z", id="fhir-time-without-day"),
    ],
)
def test_shift_fhir_date_malformed_time_is_none(value: str) -> None:
    assert shift_fhir_date(value, 10) is None
