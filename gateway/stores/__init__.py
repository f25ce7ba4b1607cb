"""Research stores: where clean data is forwarded (local folder by default)."""
