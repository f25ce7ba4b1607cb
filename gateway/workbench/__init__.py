"""The privacy officer's workbench: server-rendered pages under ``/workbench`` to read, edit,
preview, compare and sign off profiles, review quarantine and declare identity registers."""
