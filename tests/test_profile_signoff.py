"""Profile versions and sign-off (issue 14): a destination that requires a sign-off refuses to
start until its effective profile hash is signed off; a file changed afterwards refuses again."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from gateway.cli.main import main
from gateway.config import load_config
from gateway.errors import ConfigurationError, ReasonCode
from gateway.persistence.db import Database
from gateway.persistence.models import AuditEvent, ProfileSignoff, ProfileVersion
from gateway.profiles.compiler import compile_profile
from gateway.service import build_gateway, check_signoffs
from tests.service_helpers import make_app

PARTNER = 'extends: research\nname: partner\nversion: "1"\n'


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(data dir, profile file, config file) of a gateway with a 'partner' destination."""
    data = tmp_path / "data"
    profile = tmp_path / "partner.yaml"
    profile.write_text(PARTNER, encoding="utf-8")
    config = tmp_path / "config.yaml"
    _write_config(config, data, {"default": {}, "partner": {"profile": str(profile)}})
    return data, profile, config


def _write_config(path: Path, data: Path, destinations: dict[str, object], **extra: object) -> None:
    path.write_text(
        yaml.safe_dump({"data_dir": str(data), "destinations": destinations, **extra}),
        encoding="utf-8",
    )


def _signoff(profile: Path | str, config: Path) -> int:
    return main(
        [
            "profile", "signoff", str(profile), "--config", str(config),
            "--by", "Dr. Privacy Officer", "--statement", "Reviewed for partner study 7",
        ]
    )  # fmt: skip


def test_signoff_stores_version_signoff_and_audit(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, profile, config = setup
    assert _signoff(profile, config) == 0
    digest = compile_profile(profile).profile.content_hash
    out = capsys.readouterr().out.splitlines()
    assert out[0] == digest
    assert out[1].startswith("signed off: partner v1") and "Dr. Privacy Officer" in out[1]
    db = Database(load_config(config).db_url)
    with db.session() as session:
        version = session.get(ProfileVersion, digest)
        assert version is not None and version.text == PARTNER
        assert version.name == "partner" and version.saved_by == "Dr. Privacy Officer"
        (signoff,) = session.scalars(select(ProfileSignoff)).all()
        assert signoff.content_hash == digest
        assert signoff.statement == "Reviewed for partner study 7"
        (audit,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "profile:signoff")
        ).all()
        assert audit.profile_hash == digest and audit.counts == {"signoff_id": signoff.id}
    # a second sign-off of the same version keeps one version, two sign-offs
    assert _signoff(profile, config) == 0
    capsys.readouterr()
    assert main(["profile", "versions", "--data-dir", str(data)]) == 0
    listing = capsys.readouterr().out
    assert f"{digest}  partner v1" in listing and "2 sign-off(s)" in listing
    assert "extends: research" not in listing  # no profile text


def test_unsigned_destination_refuses_then_starts_after_signoff(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _data, profile, config = setup
    cfg = load_config(config)
    for start in (lambda: build_gateway(cfg), lambda: check_signoffs(cfg)):
        with pytest.raises(ConfigurationError) as exc:
            start()
        assert exc.value.reason is ReasonCode.SIGNOFF_MISSING
        assert "destination 'partner'" in exc.value.detail
        assert str(profile) in exc.value.detail and "profile signoff" in exc.value.detail
        assert compile_profile(profile).profile.content_hash in exc.value.detail
        assert "'default'" not in exc.value.detail  # the embedded default needs none
    # serve: exit 2 before binding, the message on stderr
    assert main(["serve", "--config", str(config), "--port", "1"]) == 2
    assert "destination 'partner' requires a sign-off" in capsys.readouterr().err

    assert _signoff(profile, config) == 0
    check_signoffs(cfg)
    assert set(build_gateway(cfg).destinations) == {"default", "partner"}

    # the file changed after the sign-off: another hash, refused again
    profile.write_text(PARTNER.replace('"1"', '"2"'), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="destination 'partner'"):
        build_gateway(cfg)
    with pytest.raises(ConfigurationError, match="destination 'partner'"):
        check_signoffs(cfg)


def test_worker_refuses_an_unsigned_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    _write_config(
        config,
        tmp_path / "data",
        {"default": {}, "partner": {"profile": "basic"}},
        queue={"broker_url": "amqp://guest:guest@127.0.0.1:1//"},
    )
    assert main(["worker", "--config", str(config), "--concurrency", "1"]) == 2
    err = capsys.readouterr().err
    assert "destination 'partner'" in err and "profile signoff basic" in err


def test_require_signoff_false_opts_out(tmp_path: Path) -> None:
    destinations = {"default": {}, "partner": {"profile": "basic", "require_signoff": False}}
    assert make_app(tmp_path / "data", destinations=destinations) is not None
    check_signoffs(load_config(data_dir=tmp_path / "data", destinations=destinations))


def test_default_destination_needs_none_unless_asked(tmp_path: Path) -> None:
    assert make_app(tmp_path / "data") is not None  # the embedded default starts as before
    asked = {"default": {"require_signoff": True}}
    config = load_config(data_dir=tmp_path / "d2", destinations=asked)
    assert config.requires_signoff("default")
    with pytest.raises(ConfigurationError, match="destination 'default'"):
        build_gateway(config)


def test_the_hash_is_kept_but_a_changed_copy_hashes_anew() -> None:
    """content_hash is computed once per profile (the intake records it with every request);
    a copy with a change must not inherit it, or a sign-off would cover another profile."""
    from gateway.profiles.loader import load_profile

    profile = load_profile("basic")
    first = profile.content_hash
    assert profile.content_hash == first
    changed = profile.model_copy(update={"version": profile.version + "-changed"})
    assert changed.content_hash != first
    assert profile.model_copy().content_hash == first
