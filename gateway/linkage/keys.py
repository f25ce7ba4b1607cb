"""Where the pseudonymisation key comes from.

The key never lives in a profile or the repository. A profile names a *key id*; the key itself
comes from, in this order:

1. an explicit key file (``--key-file``),
2. the environment: ``DEID_GATEWAY_KEY_<KEY_ID>`` (key id upper-cased, ``-`` -> ``_``), then
   ``DEID_GATEWAY_KEY``,
3. the key directory (``DEID_GATEWAY_KEY_DIR`` or ``~/.config/deid-gateway/keys``) file
   ``<key id>.key``, created with mode 0600 on first use when ``create=True``.

Key material may be given as ``hex:...``, ``base64:...`` or as raw text of >= 32 characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import ConfigurationError, ReasonCode

MIN_KEY_BYTES = 32
ENV_KEY = "DEID_GATEWAY_KEY"
ENV_KEY_DIR = "DEID_GATEWAY_KEY_DIR"


@dataclass(frozen=True)
class PseudonymKey:
    """A named secret. ``fingerprint`` identifies the key in reports without revealing it."""

    key_id: str
    secret: bytes = field(repr=False)
    source: str = "unknown"

    @property
    def fingerprint(self) -> str:
        return hmac.new(self.secret, b"deid-gateway/fingerprint", hashlib.sha256).hexdigest()[:16]


def default_key_dir() -> Path:
    configured = os.environ.get(ENV_KEY_DIR)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "deid-gateway" / "keys"


def parse_key_material(text: str) -> bytes:
    """Decode key material; refuse short keys (a short HMAC key makes pseudonyms guessable)."""
    text = text.strip()
    try:
        if text.startswith("hex:"):
            raw = bytes.fromhex(text[4:])
        elif text.startswith("base64:"):
            raw = base64.b64decode(text[7:], validate=True)
        else:
            raw = text.encode("utf-8")
    except ValueError:  # binascii.Error is a ValueError
        raise ConfigurationError(
            ReasonCode.KEY_MISSING, "pseudonymisation key material is not valid hex/base64"
        ) from None
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigurationError(
            ReasonCode.KEY_MISSING,
            f"pseudonymisation key is shorter than {MIN_KEY_BYTES} bytes",
        )
    return raw


def _env_name(key_id: str) -> str:
    return f"{ENV_KEY}_{key_id.upper().replace('-', '_')}"


def load_key(
    key_id: str,
    *,
    key_file: Path | None = None,
    key_dir: Path | None = None,
    create: bool = True,
) -> PseudonymKey:
    """Find the key for ``key_id``; create a key file on first use for the embedded default."""
    if key_file is not None:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(ReasonCode.KEY_MISSING, "key file cannot be read") from exc
        return PseudonymKey(key_id, parse_key_material(text), source=f"file:{key_file}")
    for name in (_env_name(key_id), ENV_KEY):
        value = os.environ.get(name)
        if value:
            return PseudonymKey(key_id, parse_key_material(value), source=f"env:{name}")
    directory = key_dir or default_key_dir()
    path = directory / f"{key_id}.key"
    if path.exists():
        return PseudonymKey(key_id, parse_key_material(path.read_text("utf-8")), f"file:{path}")
    if not create:
        raise ConfigurationError(
            ReasonCode.KEY_MISSING,
            f"no key for key id; set {ENV_KEY} or create {path}",
        )
    return _create_key_file(key_id, path)


def _create_key_file(key_id: str, path: Path) -> PseudonymKey:
    material, created = publish_key_file(path, "hex:" + secrets.token_hex(32))
    if created:
        print(
            f"deid-gateway: created a new pseudonymisation key '{key_id}' at {path} (mode 0600). "
            "Back it up and keep it apart from the data: without it pseudonyms cannot be "
            "reproduced.",
            file=sys.stderr,
        )
    return PseudonymKey(key_id, parse_key_material(material), source=f"file:{path}")


def publish_key_file(path: Path, material: str) -> tuple[str, bool]:
    """Create ``path`` holding ``material`` unless another process did first.

    Returns the material the file holds and whether it is ours. Processes that start together
    on a fresh machine (gunicorn and Celery workers, the CLI's job processes) race here: the
    key is written whole to a private temporary file and published with ``link(2)``, which
    fails if the name exists, so a concurrent reader finds no file or the whole key, never an
    empty one, and exactly one key wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".new-")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(material + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_text("utf-8"), False
    finally:
        os.unlink(temporary)
    _fsync_directory(path.parent)
    return material, True


def _fsync_directory(directory: Path) -> None:
    """Make the new name durable: a key lost in a crash would change every pseudonym."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KeyRing:
    """Keys by id, loaded once per process (a destination's profile names its key id)."""

    def __init__(self, key_file: Path | None = None, key_dir: Path | None = None) -> None:
        self._key_file = key_file
        self._key_dir = key_dir
        self._keys: dict[str, PseudonymKey] = {}

    def get(self, key_id: str) -> PseudonymKey:
        if key_id not in self._keys:
            self._keys[key_id] = load_key(key_id, key_file=self._key_file, key_dir=self._key_dir)
        return self._keys[key_id]
