"""The workbench's pages through Flask's test client: sign-in and its cookie, CSRF, the role
matrix of every page, the editor's problems at their lines, versions, diff, sign-off, preview,
quarantine review and the identity page. The browser test (tests/test_workbench_browser.py)
drives the same pages in Chromium."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.intake.http.roles import PAGES
from gateway.persistence.models import AuditEvent, Kind, WorkbenchSession, utcnow
from gateway.persistence.profiles import list_versions
from gateway.persistence.tokens import Role, create_token
from gateway.profiles.loader import resolve_profile_path
from gateway.workbench.sessions import COOKIE, LIFETIME, _hash
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app

SITE = """\
extends: {parent}
name: site-research
version: "1"
description: the research profile with one site change
dicom:
  options:
    add: [retain_device_identity]
"""


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv("DEID_GATEWAY_KEY", "workbench-test-key-" + "0123456789abcdef" * 2)
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(parent=resolve_profile_path("research")), encoding="utf-8")
    return make_app(
        tmp_path / "data",
        destinations={
            "default": {"profile": "basic"},
            "partner": {"profile": str(site), "require_signoff": False},
        },
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def sign_in(client: FlaskClient, app: Flask, role: Role) -> int:
    form = client.get("/workbench/signin").get_data(as_text=True)
    token = create_token(gw(app).db, role)
    answer = client.post(
        "/workbench/signin", data={"token": token, "csrf": csrf_of(form), "next": "/workbench/profiles"}
    )
    return answer.status_code


def officer(app: Flask, role: Role = Role.PRIVACY_OFFICER) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, app, role) == 303
    return client


def page_csrf(client: FlaskClient) -> str:
    return csrf_of(client.get("/workbench/preview").get_data(as_text=True))


# -- sign-in ---------------------------------------------------------------------------------
def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_it(app: Flask) -> None:
    client = app.test_client()
    form = client.get("/workbench/signin")
    assert form.status_code == 200 and 'for="token"' in form.get_data(as_text=True)
    assert "default-src 'self'" in form.headers["Content-Security-Policy"]
    token = create_token(gw(app).db, Role.PRIVACY_OFFICER)
    answer = client.post(
        "/workbench/signin",
        data={"token": token, "csrf": csrf_of(form.get_data(as_text=True))},
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/workbench/profiles"
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    assert client.get("/workbench/profiles").status_code == 200
    assert client.post("/workbench/signout", data={"csrf": page_csrf(client)}).status_code == 303
    assert client.get("/workbench/profiles").status_code == 303  # back to the sign-in form


def test_sign_in_behind_tls_marks_the_cookie_secure(app: Flask) -> None:
    client = app.test_client()
    base = "https://gateway.example"
    form = client.get("/workbench/signin", base_url=base).get_data(as_text=True)
    token = create_token(gw(app).db, Role.ADMIN)
    answer = client.post("/workbench/signin", base_url=base,
                         data={"token": token, "csrf": csrf_of(form)})  # fmt: skip
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if c.startswith(COOKIE))
    assert "Secure" in cookie


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.SENDER, 403), (Role.HONEST_BROKER, 403), (Role.PRIVACY_OFFICER, 303), (Role.ADMIN, 303)],
)
def test_only_officers_and_admins_may_sign_in(app: Flask, role: Role, status: int) -> None:
    assert sign_in(app.test_client(), app, role) == status


def test_sign_in_refuses_unknown_tokens_revoked_tokens_and_a_missing_csrf(app: Flask) -> None:
    client = app.test_client()
    csrf = csrf_of(client.get("/workbench/signin").get_data(as_text=True))
    assert client.post("/workbench/signin", data={"token": "dg_nope", "csrf": csrf}).status_code == 401
    token = create_token(gw(app).db, Role.PRIVACY_OFFICER)
    assert client.post("/workbench/signin", data={"token": token}).status_code == 403
    assert client.post("/workbench/signin", data={"token": token, "csrf": csrf}).status_code == 303
    from gateway.persistence.models import Token

    with gw(app).db.session() as session:
        for row in session.query(Token).all():
            row.revoked = True
    assert client.get("/workbench/profiles").status_code == 303  # the session ended with it


def test_the_next_page_stays_on_the_workbench(app: Flask) -> None:
    client = app.test_client()
    csrf = csrf_of(client.get("/workbench/signin").get_data(as_text=True))
    token = create_token(gw(app).db, Role.PRIVACY_OFFICER)
    answer = client.post("/workbench/signin",
                         data={"token": token, "csrf": csrf, "next": "https://evil.example/"})  # fmt: skip
    assert answer.headers["Location"] == "/workbench/profiles"


# -- the role matrix of every page -----------------------------------------------------------
def concrete(path: str) -> str:
    values = {"destination": "partner", "hash": "0" * 16, "item": "nosuchitem", "name": "workbench.css"}
    return re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], path)


TOKENED = sorted((k, v) for k, v in PAGES.items() if v is not None)


def session_for(app: Flask, role: Role) -> FlaskClient:
    """A session row for any role (sign-in refuses the others; the page guard must too)."""
    db = gw(app).db
    token = create_token(db, role)
    from gateway.persistence.tokens import authenticate

    principal = authenticate(db, token)
    assert principal is not None
    cookie = f"cookie-{role.value}"
    with db.session() as session:
        session.add(WorkbenchSession(id_hash=_hash(cookie), token_id=principal.token_id,
                                     csrf="c", expires_at=utcnow() + LIFETIME))  # fmt: skip
    client = app.test_client()
    client.set_cookie(COOKIE, cookie, path="/workbench/")
    return client


@pytest.mark.parametrize(("route", "roles"), TOKENED, ids=[f"{m} {p}" for (m, p), _ in TOKENED])
def test_role_matrix(app: Flask, route: tuple[str, str], roles: frozenset[Role]) -> None:
    method, path = route
    url = concrete(path)
    anonymous = app.test_client().open(url, method=method, data={"csrf": "c"})
    assert anonymous.status_code == (303 if method == "GET" else 401)
    for role in Role:
        answer = session_for(app, role).open(url, method=method, data={"csrf": "c"})
        allowed = role in roles or role is Role.ADMIN
        if allowed:
            assert answer.status_code not in (401, 403), (role, answer.status_code)
        else:
            assert answer.status_code == 403, (role, answer.status_code)


def test_a_post_without_the_sessions_csrf_token_is_refused(app: Flask) -> None:
    client = officer(app)
    answer = client.post("/workbench/profiles/partner/edit", data={"text": "x", "action": "check"})
    assert answer.status_code == 403 and "expired" in answer.get_data(as_text=True)


def test_open_pages_and_assets_need_no_session(app: Flask) -> None:
    client = app.test_client()
    css = client.get("/workbench/static/workbench.css")
    assert css.status_code == 200 and b"--redacted" in css.data
    assert client.get("/workbench/static/../templates/base.html").status_code == 404


# -- profiles --------------------------------------------------------------------------------
def test_profile_list_and_plain_language_view(app: Flask) -> None:
    client = officer(app)
    listing = client.get("/workbench/profiles").get_data(as_text=True)
    assert "partner" in listing and "unsigned" in listing
    page = client.get("/workbench/profiles/partner").get_data(as_text=True)
    for heading in ("Removed", "Replaced by a pseudonym", "Dates shifted", "Kept as they are"):
        assert heading in page
    assert "PatientName" in page and "site.yaml" in page  # the row says which file decided


def test_editor_shows_a_problem_at_its_line_then_saves_the_fixed_text(app: Flask) -> None:
    client = officer(app)
    editor = client.get("/workbench/profiles/partner/edit").get_data(as_text=True)
    csrf = csrf_of(editor)
    text = re.search(r'<textarea id="text" name="text"[^>]*>(.*?)</textarea>', editor, re.DOTALL)
    assert text
    original = text.group(1).replace("&#34;", '"').replace("&quot;", '"')
    broken = original.replace("retain_device_identity", "retain_everything")
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if "retain_everything" in t)
    answer = client.post("/workbench/profiles/partner/edit",
                         data={"csrf": csrf, "text": broken, "action": "check"})  # fmt: skip
    html = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert f'href="#line-{line}">line {line}</a>' in html
    assert re.search(rf'<li id="line-{line}" class="problem-line"', html)
    assert list_versions(gw(app).db) == []  # a check stores nothing
    saved = client.post("/workbench/profiles/partner/edit",
                        data={"csrf": csrf, "text": original, "action": "save"})  # fmt: skip
    assert saved.status_code == 200 and 'id="saved"' in saved.get_data(as_text=True)
    assert [v.name for v in list_versions(gw(app).db)] == ["site-research"]


def test_diff_against_the_shipped_profile_and_sign_off(app: Flask) -> None:
    client = officer(app)
    diff = client.get("/workbench/diff?old=shipped:research&new=file:partner").get_data(as_text=True)
    assert "RetainDeviceIdentity" in diff or "retain_device_identity" in diff
    assert re.search(r'id="count">[1-9]\d* difference', diff)
    versions = client.get("/workbench/profiles/partner/versions").get_data(as_text=True)
    file_hash = re.search(r'<option value="([0-9a-f]+)">#\1 \(the file\)', versions)
    assert file_hash and "unsigned" in versions
    answer = client.post("/workbench/profiles/partner/signoff",
                         data={"csrf": csrf_of(versions), "version": file_hash.group(1),
                               "by": "Dr Privacy", "statement": "Reviewed for the partner"})  # fmt: skip
    assert answer.status_code == 303
    after = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert 'id="state">signed' in after and "Dr Privacy" in after
    with gw(app).db.session() as session:
        assert session.query(AuditEvent).filter_by(action="profile:signoff").count() == 1
    refused = client.post("/workbench/profiles/partner/signoff",
                          data={"csrf": csrf_of(versions), "version": file_hash.group(1),
                                "by": "", "statement": ""})  # fmt: skip
    assert refused.status_code == 400


def test_diff_of_an_unknown_profile_is_a_clear_refusal(app: Flask) -> None:
    answer = officer(app).get("/workbench/diff?old=shipped:nope&new=file:partner")
    assert answer.status_code == 400 and "no such profile" in answer.get_data(as_text=True)


# -- preview ---------------------------------------------------------------------------------
def part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_preview_shows_before_to_the_officer_only_and_stores_nothing(app: Flask, tmp_path: Path) -> None:
    patient = Patient()
    data = part10(phi_instance("CT_small.dcm", patient, "wb", "CT", 1))
    for role, sees in ((Role.PRIVACY_OFFICER, True), (Role.ADMIN, False)):
        client = officer(app, role)
        answer = client.post(
            "/workbench/preview",
            data={"csrf": page_csrf(client), "destination": "partner",
                  "file": (io.BytesIO(data), "ct.dcm")},
            content_type="multipart/form-data",
        )  # fmt: skip
        html = answer.get_data(as_text=True)
        assert answer.status_code == 200 and "nothing was stored or forwarded" in html
        assert 'class="changed"' in html and "forwarded" in html
        assert (patient.name in html) is sees, role
        assert ("<th scope=\"col\">Before</th>" in html) is sees
        assert "data:image/png;base64," in html
    assert not (tmp_path / "data" / "store").exists() or not any((tmp_path / "data" / "store").rglob("*.dcm"))


def test_preview_of_fhir_shows_the_diff(app: Flask) -> None:
    client = officer(app)
    patient = b'{"resourceType": "Patient", "id": "p1", "name": [{"family": "Zebedee"}], "birthDate": "1960-05-01"}'
    answer = client.post(
        "/workbench/preview",
        data={"csrf": page_csrf(client), "destination": "partner",
              "file": (io.BytesIO(patient), "p.json")},
        content_type="multipart/form-data",
    )  # fmt: skip
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200 and 'id="fhir-diff"' in html
    assert re.search(r'class="del">-.*Zebedee', html)


def test_preview_refuses_what_is_neither_dicom_nor_fhir(app: Flask) -> None:
    client = officer(app)
    answer = client.post(
        "/workbench/preview",
        data={"csrf": page_csrf(client), "file": (io.BytesIO(b"hello"), "x.txt")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400


# -- quarantine ------------------------------------------------------------------------------
def quarantined(app: Flask) -> str:
    jobs = gw(app).jobs
    ds = phi_instance("CT_small.dcm", Patient(), "q", "CT", 1)
    del ds.SOPInstanceUID
    receipt = jobs.accept("default", Kind.DICOM, "test", [part10(ds)])
    jobs.drain(30)
    return receipt.item_ids[0]


def test_quarantine_review_release_and_discard_with_a_reason_are_audited(app: Flask) -> None:
    item = quarantined(app)
    client = officer(app)
    picker = client.get("/workbench/preview").get_data(as_text=True)
    assert f'href="/workbench/quarantine/{item}"' in picker  # offered for a preview
    listing = client.get("/workbench/quarantine").get_data(as_text=True)
    assert item in listing and "missing-required-uid" in listing
    page = client.get(f"/workbench/quarantine/{item}").get_data(as_text=True)
    assert 'id="reason">missing-required-uid' in page
    assert "Before" not in page  # never the original
    csrf = csrf_of(page)
    assert client.post(f"/workbench/quarantine/{item}/release", data={"csrf": csrf}).status_code == 400
    done = client.post(f"/workbench/quarantine/{item}/release",
                       data={"csrf": csrf, "note": "profile fixed"})  # fmt: skip
    assert done.status_code == 303
    gw(app).jobs.drain(30)  # quarantined again: it still has no UID
    assert client.post(f"/workbench/quarantine/{item}/discard",
                       data={"csrf": csrf, "note": "cannot be fixed"}).status_code == 303  # fmt: skip
    with gw(app).db.session() as session:
        notes = {e.action: e.note for e in session.query(AuditEvent).filter(AuditEvent.item_id == item)}
    assert notes["quarantine:release"] == "profile fixed"
    assert notes["quarantine:discard"] == "cannot be fixed"
    assert "quarantine:inspect" in notes


# -- identity --------------------------------------------------------------------------------
def test_declaring_a_register_makes_a_new_version_to_sign(app: Flask) -> None:
    gw(app).jobs._report_undeclared("partner", ("dicom-issuer:HOSPITAL-B",))
    client = officer(app)
    page = client.get("/workbench/identity").get_data(as_text=True)
    assert "dicom-issuer:HOSPITAL-B" in page
    answer = client.post("/workbench/identity/mapping",
                         data={"csrf": csrf_of(page), "destination": "partner",
                               "register": "dicom-issuer:HOSPITAL-B", "namespace": "local-mrn"})  # fmt: skip
    assert answer.status_code == 303
    versions = list_versions(gw(app).db)
    assert len(versions) == 1
    from gateway.persistence.profiles import get_version
    from gateway.profiles.compiler import compile_text

    record = get_version(gw(app).db, versions[0].content_hash)
    assert record is not None
    compiled = compile_text(record.text, record.source_file)
    namespaces = {n.name: n for n in compiled.profile.linkage.identity.namespaces}
    assert namespaces["local-mrn"].dicom_issuers == ["HOSPITAL-B"]
    assert namespaces["local-mrn"].fhir_systems == ["http://hospital.smarthealthit.org"]  # kept


def test_every_frame_of_a_multiframe_image_is_in_the_preview(app: Flask) -> None:
    from pydicom.data import get_testdata_file

    from gateway.pipeline.preview import preview_dicom

    path = get_testdata_file("emri_small.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.PatientName = "Zebedee^Multi"
    result = preview_dicom(gw(app).destinations["partner"], part10(ds), with_original=True)
    assert result.outcome.delivered, result.outcome
    assert [f.index for f in result.frames] == list(range(int(ds.NumberOfFrames)))
    assert all(f.before_png and f.after_png.startswith(b"\x89PNG") for f in result.frames)
    hidden = preview_dicom(gw(app).destinations["partner"], part10(ds), with_original=False)
    assert all(f.before_png is None for f in hidden.frames)
    assert all(r.before is None for r in hidden.rows)
    assert any(r.keyword == "PatientName" and r.changed for r in result.rows)


def test_the_editor_check_answers_problems_with_lines_as_json(app: Flask) -> None:
    client = officer(app)
    csrf = page_csrf(client)
    text = SITE.format(parent=resolve_profile_path("research")).replace(
        "retain_device_identity", "retain_everything"
    )
    answer = client.post("/workbench/profiles/partner/check", data={"csrf": csrf, "text": text})
    body = answer.get_json()
    assert answer.status_code == 200 and body["hash"] is None
    assert [p["line"] for p in body["problems"]] == [7]
    fixed = client.post("/workbench/profiles/partner/check",
                        data={"csrf": csrf, "text": SITE.format(parent=resolve_profile_path("research"))})  # fmt: skip
    assert fixed.get_json()["problems"] == [] and fixed.get_json()["hash"]
    assert list_versions(gw(app).db) == []


def test_behind_a_tls_proxy_the_cookie_is_secure_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY", "workbench-test-key-" + "0123456789abcdef" * 2)
    app = make_app(tmp_path / "data", public_url="https://gateway.hospital.example")
    client = app.test_client()
    form = client.get("/workbench/signin").get_data(as_text=True)
    token = create_token(gw(app).db, Role.PRIVACY_OFFICER)
    answer = client.post("/workbench/signin", data={"token": token, "csrf": csrf_of(form)})
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if c.startswith(COOKIE))
    assert "Secure" in cookie


def test_an_unknown_destination_is_a_404_page(app: Flask) -> None:
    client = officer(app)
    for path in ("/workbench/profiles/nope", "/workbench/profiles/nope/edit", "/workbench/profiles/nope/versions"):
        answer = client.get(path)
        assert answer.status_code == 404 and "no such destination" in answer.get_data(as_text=True), path
        assert answer.mimetype == "text/html"
