"""What `mailrules doctor` checks of a PostgreSQL state: the login, the schema, who holds what.

Read-only: nothing is created, migrated or leased.
"""

from __future__ import annotations

import psycopg

from mailrules.state.findings import Finding
from mailrules.state.pg_conn import Database, describe
from mailrules.state.pg_schema import SCHEMA_VERSION, applied


def check_postgres(url: str, password: str | None) -> list[Finding]:
    """The server answers the login, the schema's version, and the cluster as the leases say."""
    db = Database(url, password, application_name="mailrules doctor")
    try:
        conn = db.connect()
    except Exception as exc:  # StateOpenError: its text names the state and the reason
        return [Finding("state", "FAIL", str(exc), "check `state`, state_password_file and the server")]
    try:
        versions = applied(conn)
        version = max(versions, default=0)
        cluster = ""
        if version >= 2:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM replicas WHERE seen_at > clock_timestamp() - "
                "interval '1 minute'), (SELECT count(*) FROM leases WHERE owner IS NOT NULL "
                "AND expires_at > clock_timestamp()), (SELECT count(*) FROM leases)"
            ).fetchone()
            if row is not None:
                cluster = (
                    f", {row[0]} replica(s) seen in the last minute, {row[1]} of {row[2]} accounts leased"
                )
    except psycopg.Error as exc:
        return [Finding("state", "FAIL", f"{db.where}: {describe(exc)}")]
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        return [Finding(
            "state", "FAIL", f"{db.where}: schema {version} is newer than this mailrules's {SCHEMA_VERSION}",
            "a newer mailrules migrated it: run that version",
        )]  # fmt: skip
    if version < SCHEMA_VERSION:
        return [
            Finding(
                "state",
                "INFO",
                f"{db.where}: schema {version} (migrated to {SCHEMA_VERSION} at the next start)",
            )
        ]
    return [Finding("state", "OK", f"{db.where}: schema {version}{cluster}")]
