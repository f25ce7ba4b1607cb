"""C-STORE SCP end to end: real SCUs (pynetdicom, dcmtk ``storescu``) over 127.0.0.1 -> spool
before the response -> pipeline -> clean instances in the local research store."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from flask import Flask
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)
from sqlalchemy import func, select

from gateway.errors import ConfigurationError, IntakeUnavailable, ReasonCode
from gateway.intake.dimse import StoreStatus, requestor_order, start_scp, stop_scp
from gateway.persistence.models import Item, Job
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app

PATIENT = Patient()
AE_TITLE = "DEIDGW"
#: real samples (pydicom's test files) in the usual transfer syntaxes, sent as they are
SOURCES = {
    "explicit-le": "CT_small.dcm",
    "implicit-le": "MR_small_implicit.dcm",
    "explicit-be": "MR_small_bigendian.dcm",
    "rle": "MR_small_RLE.dcm",
    "jpeg-baseline": "SC_rgb_jpeg_dcmtk.dcm",
    "jpeg-extended": "JPGExtended.dcm",
    "jpeg-lossless": "JPEG-LL.dcm",
    "jpeg-ls": "MR_small_jpeg_ls_lossless.dcm",
    "j2k": "JPEG2000.dcm",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def scp(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Flask, int]]:
    caplog.set_level(logging.DEBUG, logger="gateway")
    port = _free_port()
    app = make_app(tmp_path / "data", dimse={"enabled": True, "host": "127.0.0.1", "port": port,
                                             "ae_title": AE_TITLE})
    handle = start_scp(app)
    yield app, port
    stop_scp(handle, grace_seconds=1.0)  # a garbage peer's association lingers (ARTIM)
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(2)
        probe.connect(("127.0.0.1", port))  # stopped: nothing listens any more
    for phi in PATIENT.phi_strings():  # every test: no PHI in what the gateway logged
        assert phi.upper() not in caplog.text.upper()


def study(key: str, kinds: tuple[str, ...] = tuple(SOURCES)) -> list[Dataset]:
    out: list[Dataset] = []
    for number, kind in enumerate(kinds, start=1):
        out.append(phi_instance(SOURCES[kind], PATIENT, key, kind, number, out[0] if out else None))
    return out


def deflated(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def _scu(*contexts: tuple[str, list[str] | None]) -> AE:
    ae = AE(ae_title="MODALITY1")
    for abstract, syntaxes in contexts:
        if syntaxes:
            ae.add_requested_context(abstract, syntaxes)
        else:
            ae.add_requested_context(abstract)
    return ae


def _native_first(ds: Dataset) -> tuple[str, list[str]]:
    """What a modality proposes: the image's own syntax first, uncompressed as fallbacks."""
    native = str(ds.file_meta.TransferSyntaxUID)
    fallbacks = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    return str(ds.SOPClassUID), [native, *(str(ts) for ts in fallbacks if ts != native)]


def _rows(app: Flask) -> tuple[int, int]:
    with gw(app).db.session() as session:
        return (int(session.scalar(select(func.count()).select_from(Job)) or 0),
                int(session.scalar(select(func.count()).select_from(Item)) or 0))


def _spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "spool").rglob("*.dcm"))


def assert_forwarded_clean(app: Flask, tmp_path: Path, sent: list[Dataset]) -> None:
    gw(app).jobs.drain(60)
    assert gw(app).jobs.status_counts() == {"forwarded": len(sent)}
    root = tmp_path / "data" / "store" / "default"
    stored = sorted(root.rglob("*.dcm"))
    assert len(stored) == len(sent)
    assert not _spooled(tmp_path)  # spooled originals are deleted once forwarded
    original_uids = {str(ds.SOPInstanceUID) for ds in sent}
    for path in stored:
        raw = path.read_bytes().upper()
        for phi in PATIENT.phi_strings():
            assert phi.upper().encode() not in raw, path.name
        assert len(path.relative_to(root).parts) == 4  # <patient>/<study>/<series>/<sop>.dcm
        assert str(pydicom.dcmread(path).SOPInstanceUID) not in original_uids


def test_pynetdicom_scu_each_instance_spooled_before_success(
    scp: tuple[Flask, int], tmp_path: Path
) -> None:
    app, port = scp
    sent = study("dimse-pynetdicom")
    ae = _scu(*[_native_first(ds) for ds in sent])
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        for count, ds in enumerate(sent, start=1):
            status = assoc.send_c_store(ds)
            assert status.Status == StoreStatus.SUCCESS, ds.file_meta.TransferSyntaxUID.name
            # no worker runs (start_workers=False): the row and the spool file exist because
            # the SCP wrote them before it answered
            assert _rows(app) == (count, count)
            spooled = _spooled(tmp_path)
            assert len(spooled) == count
            assert all((p.stat().st_mode & 0o777) == 0o600 for p in spooled)
    finally:
        assoc.release()
    received = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in _spooled(tmp_path)}
    assert set(received) == {str(ds.SOPInstanceUID) for ds in sent}
    for ds in sent:  # stored as received: same transfer syntax, same pixel bytes, no transcoding
        spooled_ds = pydicom.dcmread(received[str(ds.SOPInstanceUID)])
        assert spooled_ds.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert spooled_ds.PixelData == ds.PixelData
    job = gw(app).jobs.job_status(next(iter(_job_ids(app))))
    assert job is not None and job["channel"] == "c-store" and job["destination"] == "default"
    assert_forwarded_clean(app, tmp_path, sent)


def _send_deflated(port: int) -> Dataset:
    ds = deflated(phi_instance("CT_small.dcm", PATIENT, "dimse-deflate", "CT", 1))
    assoc = _scu(_native_first(ds)).associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == StoreStatus.SUCCESS
    return ds


def test_deflated_is_spooled_as_received(scp: tuple[Flask, int], tmp_path: Path) -> None:
    _app, port = scp
    ds = _send_deflated(port)
    (spooled,) = _spooled(tmp_path)
    back = pydicom.dcmread(spooled)
    assert back.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PixelData == ds.PixelData


def test_deflated_is_forwarded_clean(scp: tuple[Flask, int], tmp_path: Path) -> None:
    app, port = scp
    assert_forwarded_clean(app, tmp_path, [_send_deflated(port)])


@pytest.mark.parametrize(
    ("proposals", "expected_first"),
    [
        ([["RLE", "ELE", "ILE"]], "RLE"),  # the SCU's native choice, not our first
        ([["ELE"], ["BE", "ILE"]], "ELE"),  # dcmtk's default: two contexts, both honoured
        ([["ILE", "ELE"], ["BE", "ELE", "ILE"], ["JLS", "ELE"]], "BE"),
        ([["XYZ", "J2K", "ELE"]], "J2K"),  # unknown to us: its next choice
        ([], "ELE"),  # nothing proposed: our own order
    ],
)
def test_requestor_order_gives_each_context_its_first_choice(
    proposals: list[list[str]], expected_first: str
) -> None:
    supported = ["ELE", "ILE", "BE", "RLE", "JLS", "J2K"]
    ordered = requestor_order(proposals, supported)
    assert sorted(ordered) == sorted(supported) and ordered[0] == expected_first
    for proposal in proposals:  # what pynetdicom accepts for each context: its first choice
        ours = [ts for ts in proposal if ts in supported]
        assert next(ts for ts in ordered if ts in ours) == ours[0]


def _job_ids(app: Flask) -> list[str]:
    with gw(app).db.session() as session:
        return [str(i) for i in session.scalars(select(Job.id))]


def _dcmtk(program: str) -> str:
    """The Debian dcmtk binary (pynetdicom's own apps may shadow the name on PATH)."""
    path = os.environ.get("PATH", "").split(os.pathsep)
    for candidate in [f"/usr/bin/{program}", *(os.path.join(d, program) for d in path)]:
        if not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "--version"], check=False, capture_output=True,
                               text=True, timeout=10)
        if "dcmtk" in (probe.stdout + probe.stderr).lower():
            return candidate
    if os.environ.get("CI"):
        pytest.fail(f"CI needs dcmtk's {program} (Debian package dcmtk)")
    pytest.skip(f"dcmtk {program} not installed (Debian package dcmtk)")


def test_dcmtk_storescu_study_forwarded_clean(scp: tuple[Flask, int], tmp_path: Path) -> None:
    app, port = scp
    storescu = _dcmtk("storescu")
    # dcmtk proposes one set of syntaxes per run: one run per encoding, as an operator would
    runs: dict[str, list[str]] = {
        "explicit-le": [], "rle": ["--propose-rle"], "j2k": ["--propose-j2k-lossy"],
        "jpeg-lossless": ["--propose-lossless"], "jpeg-baseline": ["--propose-jpeg8"],
    }
    sent = study("dimse-dcmtk", tuple(runs))
    folder = tmp_path / "outgoing"
    folder.mkdir()
    for number, (ds, options) in enumerate(zip(sent, runs.values(), strict=True), start=1):
        path = folder / f"instance{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        result = subprocess.run(
            [storescu, *options, "--required", "-aet", "PACS1", "-aec", AE_TITLE,
             "127.0.0.1", str(port), str(path)],
            check=False, capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        # storescu has its answer and no worker runs: the instance is already spooled
        assert _rows(app) == (number, number) and len(_spooled(tmp_path)) == number
    assert_forwarded_clean(app, tmp_path, sent)


def test_c_echo_pynetdicom_and_dcmtk(scp: tuple[Flask, int]) -> None:
    _app, port = scp
    assoc = _scu((Verification, None)).associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    echoscu = _dcmtk("echoscu")
    result = subprocess.run([echoscu, "-aec", AE_TITLE, "127.0.0.1", str(port)],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]


def test_wrong_called_ae_title_is_rejected(scp: tuple[Flask, int]) -> None:
    _app, port = scp
    assoc = _scu((Verification, None)).associate("127.0.0.1", port, ae_title="SOMEONEELSE")
    assert assoc.is_rejected and not assoc.is_established


def test_unsupported_sop_class_only_is_refused(scp: tuple[Flask, int]) -> None:
    _app, port = scp
    scu = _scu((ModalityWorklistInformationFind, None))
    assoc = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert not assoc.is_established  # no acceptable presentation context: aborted


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(64)),  # not DICOM at all
    b"\x01\x00\x00\x00\x00\x20" + b"\xff" * 32,  # an A-ASSOCIATE-RQ header, nonsense body
], ids=["http", "bad-associate-rq"])
def test_garbage_connection_is_dropped_and_scp_keeps_serving(
    scp: tuple[Flask, int], garbage: bytes
) -> None:
    app, port = scp
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(garbage)
        answer = raw.recv(64)
    assert answer == b"" or answer[:1] == b"\x07"  # closed, or an A-ABORT PDU first
    assoc = _scu((Verification, None)).associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert _rows(app) == (0, 0)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (OSError(28, "No space left on device"), "spool-write-failed"),
        (IntakeUnavailable(ReasonCode.ACCEPT_FAILED, "the database cannot be written"),
         "accept-failed"),
        (RuntimeError(f"database said {PATIENT.family}"), "accept-failed"),  # message not logged
    ],
)
def test_accept_failure_answers_out_of_resources_and_logs_a_reason_only(
    scp: tuple[Flask, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, failure: Exception, reason: str,
) -> None:
    app, port = scp

    def failing(*_args: object, **_kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(gw(app).jobs, "accept", failing)
    ds = study("dimse-failure")[0]
    assoc = _scu(_native_first(ds)).associate("127.0.0.1", port, ae_title=AE_TITLE)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == StoreStatus.OUT_OF_RESOURCES
    assert reason in caplog.text  # the fixture's teardown checks the log holds no PHI
    assert not _spooled(tmp_path) and _rows(app) == (0, 0)


def test_scp_refuses_to_start_for_an_unknown_destination(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data", dimse={"enabled": True, "port": _free_port(),
                                             "destination": "nowhere"})
    with pytest.raises(ConfigurationError):
        start_scp(app)


@pytest.fixture()
def allow_listed(tmp_path: Path) -> Iterator[tuple[Flask, int]]:
    """An SCP whose destination lets only MODALITY1 send (``calling_ae_titles``)."""
    port = _free_port()
    app = make_app(tmp_path / "data", dimse={"enabled": True, "host": "127.0.0.1", "port": port,
                                             "ae_title": AE_TITLE},
                   destinations={"default": {"calling_ae_titles": ["MODALITY1"]}})
    handle = start_scp(app)
    yield app, port
    stop_scp(handle, grace_seconds=1.0)


def test_calling_ae_not_on_the_allow_list_is_rejected_with_the_reason(
    allow_listed: tuple[Flask, int], caplog: pytest.LogCaptureFixture,
) -> None:
    app, port = allow_listed
    caplog.set_level(logging.INFO, logger="pynetdicom")
    pynetdicom_log = logging.getLogger("pynetdicom")
    pynetdicom_log.addHandler(caplog.handler)  # pynetdicom's logger may not propagate
    intruder = _scu((Verification, None))
    intruder.ae_title = "INTRUDER"
    assoc = intruder.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_rejected and not assoc.is_established
    pynetdicom_log.removeHandler(caplog.handler)
    assert "Calling AE title not recognised" in caplog.text  # A-ASSOCIATE-RJ reason 3
    assert _rows(app) == (0, 0)


def test_the_calling_ae_is_recorded_as_the_sender_in_job_and_audit(
    allow_listed: tuple[Flask, int],
) -> None:
    app, port = allow_listed
    ds = study("dimse-sender")[0]
    assoc = _scu(_native_first(ds)).associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    from gateway.persistence.models import AuditEvent

    with gw(app).db.session() as session:
        (job,) = session.query(Job).all()
        actors = {a.actor for a in session.query(AuditEvent).filter(AuditEvent.action == "receive:c-store")}
    assert job.sender == "ae:MODALITY1" and actors == {"ae:MODALITY1"}
