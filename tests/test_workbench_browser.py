"""The workbench in a real browser: Debian's Chromium driven by Selenium against the gateway
served over HTTP. One officer's session, in order: sign in, open a profile, break it and see
the error at its line, fix and save it, diff it against the shipped profile, sign it off,
preview a DICOM image with burned-in text and see the outlines, release a quarantined item.
Every page is saved as a screenshot under ``test-artifacts/workbench/`` (or
``$DEID_GATEWAY_ARTIFACTS``); every visible form field must have a label, and the pages must
reflow at 200% zoom (a 640 px wide window) without scrolling sideways."""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask import Flask

from gateway.persistence.models import Item, ItemStatus, Kind
from gateway.persistence.tokens import Role, create_token
from gateway.profiles.loader import resolve_profile_path
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app
from tests.test_workbench import SITE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("DEID_GATEWAY_ARTIFACTS", ROOT / "test-artifacts")) / "workbench"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if CHROMIUM is None or DRIVER is None:
        return "Debian's chromium and chromium-driver are not installed (scripts/install.sh)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the browser: {reason}", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    from werkzeug.serving import make_server

    os.environ.setdefault("DEID_GATEWAY_KEY", "browser-test-key-" + "0123456789abcdef" * 2)
    root = tmp_path_factory.mktemp("workbench")
    site = root / "site.yaml"
    site.write_text(SITE.format(parent=resolve_profile_path("research")), encoding="utf-8")
    app = make_app(
        root / "data",
        destinations={
            "default": {"profile": "basic"},
            "partner": {"profile": str(site), "require_signoff": False},
        },
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class Officer:
    """The browser, with the checks every page gets: a screenshot, labels, reflow."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver, self.base, self.shots = driver, base, 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def wait(self, selector: str, seconds: float = 60) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, seconds).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, selector))
        )

    def page(self, name: str) -> None:
        """Screenshot, then the accessibility checks of the page as it is."""
        self.shots += 1
        self.driver.save_screenshot(str(ARTIFACTS / f"{self.shots:02d}-{name}.png"))
        unlabelled = self.driver.execute_script(
            """return [...document.querySelectorAll('input, select, textarea')]
                 .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
                 .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`)))
                 .map(e => e.name || e.outerHTML.slice(0, 60));"""
        )
        assert unlabelled == [], (name, unlabelled)
        size = self.driver.get_window_size()
        self.driver.set_window_size(640, size["height"])  # 1280 px at 200% zoom
        try:
            wide = self.driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
        finally:
            self.driver.set_window_size(size["width"], size["height"])
        assert wide <= 1, (name, f"{wide} px of sideways scrolling at 200% zoom")


def part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_an_officers_session_in_chromium(browser: Any, served: tuple[Flask, str], tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    app, base = served
    me = Officer(browser, base)

    # sign in (with the keyboard: the token field is reachable and Enter submits)
    me.go("/workbench/profiles")
    me.wait("#token")
    me.page("sign-in")
    field = me.css("#token")
    field.send_keys(create_token(gw(app).db, Role.PRIVACY_OFFICER))
    field.send_keys(Keys.ENTER)
    me.wait("table caption")
    assert browser.current_url.endswith("/workbench/profiles")
    cookie = browser.get_cookie("deid_workbench")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "unsigned" in me.css("main").text
    me.page("profiles")

    # open a profile: plain language, grouped
    me.css('a[href="/workbench/profiles/partner"]').click()
    me.wait("#group-removed")
    assert "PatientName" in me.css("#group-removed").text
    me.page("profile")

    # break it, see the error at its line; fix it and save
    me.css("#edit").click()
    area = me.wait("#text")
    original = area.get_property("value")
    broken = original.replace("retain_device_identity", "retain_everything")
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if "retain_everything" in t)
    browser.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        area,
        broken,
    )
    me.wait(f'#live-problems li[data-line="{line}"]', 30)  # as typed, before any click
    me.page("editor-as-typed")
    me.css("#check").click()
    me.wait("#problems")
    assert f"line {line}" in me.css("#problems").text
    assert "problem-line" in me.css(f"#line-{line}").get_attribute("class")
    me.page("editor-problem")
    area = me.css("#text")
    browser.execute_script("arguments[0].value = arguments[1];", area, original)
    me.css("#save").click()
    me.wait("#saved")
    me.page("editor-saved")

    # diff against the shipped profile
    me.go("/workbench/profiles/partner/versions")
    from selenium.webdriver.support.ui import Select

    me.wait("#compare")
    Select(me.css("#old")).select_by_value("shipped:research")
    me.css("#compare").click()
    me.wait("#differences")
    assert len(me.all("#differences tbody tr")) >= 1
    assert "retain_device_identity" in me.css("#differences").text or "Device" in me.css(
        "#differences"
    ).text
    me.page("diff")

    # sign off the saved version (its hash is the file's: the destination becomes signed)
    me.go("/workbench/profiles/partner/versions")
    me.wait("#signoff")
    me.css("#by").send_keys("Dr Privacy Officer")
    me.css("#statement").send_keys("Reviewed against the shipped research profile.")
    me.css("#signoff").click()
    me.wait("#message")
    assert me.css("#state").text == "signed"
    me.page("signed-off")

    # preview a DICOM image with burned-in text: the outlines are drawn
    from tests.pixel_fixtures import us_grey_real

    image = tmp_path / "burned-in.dcm"
    image.write_bytes(part10(us_grey_real().dataset))
    me.go("/workbench/preview")
    me.wait("#file")
    Select(me.css("#destination")).select_by_visible_text("partner")
    me.css("#file").send_keys(str(image))
    me.page("preview-form")
    me.css("#run-preview").click()
    me.wait("#outcome", 180)
    assert "forwarded" in me.css("#outcome").text
    assert "nothing was stored or forwarded" in me.css("main").text
    outlines = me.all("#frame-1 rect.outline.redacted")
    assert len(outlines) >= 2, "the burned-in lines are outlined"
    assert len(me.all("#frame-1 figure")) == 2  # before and after, for the officer
    me.page("preview")

    # release a quarantined item with a reason
    ds = phi_instance("CT_small.dcm", Patient(), "browser", "CT", 1)
    del ds.SOPInstanceUID
    jobs = gw(app).jobs
    item = jobs.accept("default", Kind.DICOM, "test", [part10(ds)]).item_ids[0]
    jobs.drain(30)
    me.go("/workbench/quarantine")
    me.wait("#items")
    me.page("quarantine")
    me.css(f'a[href="/workbench/quarantine/{item}"]').click()
    me.wait("#release-note")
    assert "missing-required-uid" in me.css("#reason").text
    me.page("quarantine-item")
    me.css("#release-note").send_keys("re-sent by the modality with its UID")
    me.css("#release").click()
    me.wait("#counts")
    with gw(app).db.session() as session:
        row = session.get(Item, item)
        assert row is not None and row.status in (ItemStatus.RECEIVED, ItemStatus.QUARANTINED)
        assert row.attempts <= 1
    audit = [e for e in gw(app).review.audit_events() if e["item"] == item]
    assert any(e["action"] == "quarantine:release" and e["note"] for e in audit)
    me.page("quarantine-released")

    me.go("/workbench/identity")
    me.wait("#registers")
    me.page("identity")

    # sign out
    me.css(".signout button").click()
    me.wait("#token")
    me.go("/workbench/profiles")
    me.wait("#token")  # the session is gone
