"""Where the pseudonymisation key comes from (issue 2): env, key file, auto-created key file.

Every test points DEID_GATEWAY_KEY_DIR (and HOME / XDG_CONFIG_HOME) at tmp_path, so nothing here
reads or writes a key under the real $HOME.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from gateway.errors import ConfigurationError
from gateway.linkage.keys import KeyRing, PseudonymKey, load_key, parse_key_material
from gateway.linkage.pseudonym import Pseudonymizer

GENERAL = "general-key-" + "g" * 40
SPECIFIC = "specific-key-" + "s" * 40
SHORT = "x" * 31  # one byte short of the 32 bytes an HMAC-SHA256 key should have


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean key environment: no key variables, key dir and $HOME under tmp_path."""
    for name in list(os.environ):
        if name.startswith("DEID_GATEWAY_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    key_dir = tmp_path / "state" / "keys"
    monkeypatch.setenv("DEID_GATEWAY_KEY_DIR", str(key_dir))
    return key_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- precedence
def test_key_id_variable_wins_over_general(key_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY", GENERAL)
    monkeypatch.setenv("DEID_GATEWAY_KEY_PROJECT_X", SPECIFIC)
    key = load_key("project-x")
    assert key.secret == SPECIFIC.encode()
    assert key.key_id == "project-x"
    # Another key id falls back to the general variable.
    assert load_key("other").secret == GENERAL.encode()
    assert not key_env.exists()  # nothing written when the environment has the key


def test_key_id_variable_is_upper_cased(key_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY_TRIAL_7", SPECIFIC)
    assert load_key("trial_7").secret == SPECIFIC.encode()
    assert load_key("Trial-7").secret == SPECIFIC.encode()


def test_general_variable(key_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY", GENERAL)
    assert load_key("default").secret == GENERAL.encode()
    assert not key_env.exists()


def test_environment_wins_over_key_dir(key_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_env.mkdir(parents=True)
    (key_env / "default.key").write_text("file-key-" + "f" * 40, encoding="utf-8")
    monkeypatch.setenv("DEID_GATEWAY_KEY", GENERAL)
    assert load_key("default").secret == GENERAL.encode()


def test_key_file_option_wins_over_environment(
    key_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY", GENERAL)
    monkeypatch.setenv("DEID_GATEWAY_KEY_DEFAULT", SPECIFIC)
    secret = bytes(range(48))
    key_file = tmp_path / "project.key"
    key_file.write_text("hex:" + secret.hex() + "\n", encoding="utf-8")
    key = load_key("default", key_file=key_file)
    assert key.secret == secret
    assert KeyRing(key_file=key_file).get("default").secret == secret


def test_key_file_option_base64(key_env: Path, tmp_path: Path) -> None:
    secret = bytes(range(200, 240))
    key_file = tmp_path / "b64.key"
    key_file.write_text("base64:" + base64.b64encode(secret).decode() + "\n", encoding="utf-8")
    assert load_key("default", key_file=key_file).secret == secret


def test_missing_key_file_is_an_error(key_env: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_key("default", key_file=tmp_path / "does-not-exist.key")
    assert not key_env.exists()  # no fallback to a freshly created key


# --------------------------------------------------------------------------- short keys
@pytest.mark.parametrize(
    "material",
    [SHORT, "hex:" + "ab" * 31, "base64:" + base64.b64encode(b"k" * 31).decode(), "", "   "],
    ids=["raw-31", "hex-31", "base64-31", "empty", "blank"],
)
def test_short_key_refused(material: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_key_material(material)
    if material.strip():
        assert material.split(":")[-1] not in str(info.value)  # the key is never echoed


def test_short_key_in_environment_refused(key_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY", SHORT)
    with pytest.raises(ConfigurationError) as info:
        load_key("default")
    assert SHORT not in str(info.value)
    assert not key_env.exists()  # refused, not silently replaced by a new key


def test_short_key_file_refused(key_env: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "short.key"
    key_file.write_text(SHORT, encoding="utf-8")
    with pytest.raises(ConfigurationError):
        load_key("default", key_file=key_file)


def test_exactly_32_bytes_accepted() -> None:
    assert parse_key_material("k" * 32) == b"k" * 32
    assert parse_key_material("hex:" + "00" * 32) == bytes(32)


@pytest.mark.parametrize(
    "material", ["hex:zz" + "00" * 40, "base64:!!!" + "A" * 60], ids=["hex", "base64"]
)
def test_malformed_key_material_is_a_configuration_error(material: str) -> None:
    """A typed refusal (the CLI maps ConfigurationError), never a bare ValueError traceback."""
    with pytest.raises(ConfigurationError) as info:
        parse_key_material(material)
    assert material.split(":", 1)[1] not in str(info.value)


# --------------------------------------------------------------------------- auto-created key
def test_auto_created_key_file(
    key_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0)  # permissive umask: the modes must not depend on it
    try:
        key = load_key("default")
    finally:
        os.umask(old)
    path = key_env / "default.key"
    assert path.is_file()
    assert _mode(path) == 0o600
    assert _mode(key_env) == 0o700
    assert len(key.secret) >= 32
    err = capsys.readouterr().err
    assert str(path) in err
    assert key.secret.hex() not in err  # says where, not what

    again = load_key("default")
    assert again.secret == key.secret
    assert capsys.readouterr().err == ""  # reused silently
    assert sorted(p.name for p in key_env.iterdir()) == ["default.key"]


def test_auto_created_keys_are_per_key_id_and_random(key_env: Path) -> None:
    one = load_key("one")
    two = load_key("two")
    assert one.secret != two.secret
    assert {p.name for p in key_env.iterdir()} == {"one.key", "two.key"}


def test_reused_key_gives_same_pseudonyms(key_env: Path) -> None:
    first = Pseudonymizer(load_key("default"))
    second = Pseudonymizer(KeyRing().get("default"))
    assert first.uid("1.2.3.4") == second.uid("1.2.3.4")


def test_no_creation_when_not_allowed(key_env: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_key("default", create=False)
    assert not (key_env / "default.key").exists()


def test_default_key_dir_under_xdg_config(
    key_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DEID_GATEWAY_KEY_DIR")
    load_key("default")
    expected = tmp_path / "xdg" / "deid-gateway" / "keys" / "default.key"
    assert expected.is_file()
    assert _mode(expected) == 0o600
    assert str(expected) in capsys.readouterr().err


def test_explicit_key_dir_argument(key_env: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    key = load_key("default", key_dir=other)
    assert (other / "default.key").is_file()
    assert not key_env.exists()
    assert load_key("default", key_dir=other).secret == key.secret


# --------------------------------------------------------------------------- key objects
def test_key_repr_and_fingerprint_hide_the_secret() -> None:
    secret = b"super-secret-material-" + b"z" * 20
    key = PseudonymKey("default", secret)
    assert "super-secret" not in repr(key)
    fingerprint = key.fingerprint
    assert fingerprint and secret.hex()[:8] not in fingerprint
    assert fingerprint == PseudonymKey("x", secret).fingerprint
    assert fingerprint != PseudonymKey("default", secret + b"!").fingerprint


def test_keyring_loads_each_id_once(key_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY", GENERAL)
    ring = KeyRing()
    first = ring.get("default")
    monkeypatch.setenv("DEID_GATEWAY_KEY", SPECIFIC)
    assert ring.get("default") is first
