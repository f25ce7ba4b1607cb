"""Where the broker key comes from: never the pseudonymisation key, never the database.

The vault's originals are sealed with this key. Its custody differs from the pseudonymisation
key's: whoever holds the pseudonymisation key can compute pseudonyms from identifiers (forward),
whoever holds the broker key can read the vault (backward). Lookup, in order:

1. ``$DEID_GATEWAY_BROKER_KEY`` (``hex:``/``base64:``/text, 32 bytes or more),
2. the file named by ``broker_key_file`` (service configuration) or ``--broker-key-file``,
3. ``broker.key`` in the key directory, created 0600 on first use (the embedded default only:
   production names its own file or variable, held by the honest broker).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import ConfigurationError, ReasonCode
from gateway.linkage.keys import default_key_dir, parse_key_material, publish_key_file

ENV_BROKER_KEY = "DEID_GATEWAY_BROKER_KEY"
DEFAULT_FILE_NAME = "broker.key"


@dataclass(frozen=True)
class BrokerKey:
    """The vault's key. ``fingerprint`` names it in reports without revealing it."""

    secret: bytes = field(repr=False)
    source: str = "unknown"

    @property
    def aead_key(self) -> bytes:
        """32 bytes for AES-256-GCM, derived so any accepted material length works."""
        return hmac.new(self.secret, b"deid-gateway/vault/aes-256-gcm", hashlib.sha256).digest()

    @property
    def index_key(self) -> bytes:
        """Keys the look-up hash of a pseudonym (the row's index), apart from the cipher key."""
        return hmac.new(self.secret, b"deid-gateway/vault/index", hashlib.sha256).digest()

    @property
    def fingerprint(self) -> str:
        return hmac.new(self.secret, b"deid-gateway/fingerprint", hashlib.sha256).hexdigest()[:16]


def load_broker_key(key_file: Path | None = None, *, create: bool = True) -> BrokerKey:
    """The broker key by the lookup above; ConfigurationError (key-missing) when there is none
    and ``create`` is false, or the file named cannot be read."""
    value = os.environ.get(ENV_BROKER_KEY)
    if value:
        return BrokerKey(material(value), source=f"env:{ENV_BROKER_KEY}")
    if key_file is not None:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except OSError:
            raise ConfigurationError(
                ReasonCode.KEY_MISSING, "broker key file cannot be read"
            ) from None
        return BrokerKey(material(text), source=f"file:{key_file}")
    path = default_key_dir() / DEFAULT_FILE_NAME
    if path.exists():
        return BrokerKey(material(path.read_text("utf-8")), source=f"file:{path}")
    if not create:
        raise ConfigurationError(
            ReasonCode.KEY_MISSING,
            f"no broker key; set {ENV_BROKER_KEY} or broker_key_file",
        )
    return _create(path)


def material(text: str) -> bytes:
    try:
        return parse_key_material(text)
    except ConfigurationError:
        raise ConfigurationError(
            ReasonCode.KEY_MISSING, "broker key material is missing, short or not hex/base64"
        ) from None


def _create(path: Path) -> BrokerKey:
    text, created = publish_key_file(path, "hex:" + secrets.token_hex(32))
    if created:
        print(
            f"deid-gateway: created a new broker (vault) key at {path} (mode 0600). Give it to "
            "the honest broker and keep it apart from the pseudonymisation key and the database.",
            file=sys.stderr,
        )
    return BrokerKey(material(text), source=f"file:{path}")
