"""The gateway's database: jobs, items, tokens, audit (SQLite by default, PostgreSQL when
configured). Never holds PHI: only pseudonymised references, reason codes and counts."""
