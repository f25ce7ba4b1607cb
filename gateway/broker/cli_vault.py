"""The command line's vault: a SQLite file beside the output folder, or a database by URL.

``deidentify --output research`` keeps the vault in ``research.vault.db`` (in the output's
parent, like ``research.quarantine``; never inside the output, which goes to the partner);
``--database URL`` names another one (the service's database, for instance, so one honest
broker answers for both). The rows are the service's rows, under destination ``cli``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gateway.broker.keys import load_broker_key
from gateway.broker.vault import Vault
from gateway.linkage.issued import Issued
from gateway.persistence.db import Database

CLI_DESTINATION = "cli"
VAULT_SUFFIX = ".vault.db"


def default_vault_url(output: Path) -> str:
    path = output.resolve().with_name(output.name + VAULT_SUFFIX)
    return f"sqlite:///{path}"


def open_vault(url: str, broker_key_file: Path | None = None, create_key: bool = True) -> Vault:
    """The vault in ``url`` (tables created) with the broker key by its usual lookup."""
    key = load_broker_key(broker_key_file, create=create_key)
    db = Database(url)
    db.create_all()
    return Vault(db, key)


def record_run(vault: Vault, issued: Iterable[Issued]) -> int:
    return vault.record_many(CLI_DESTINATION, list(issued))
