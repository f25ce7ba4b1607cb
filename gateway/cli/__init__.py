"""The ``deid-gateway`` command line."""
