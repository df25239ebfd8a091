"""The keys of the store's `meta` table (one name each: a misspelt key is an error, not a silent miss).

Read and written with `pulse_cli.store.connection.read_meta` / `write_meta`.
"""

from __future__ import annotations

# The install
CLIENT_ID = "client_id"  # this store's id on the wire (random; a new one when a copy of the store is found)
FORMER_CLIENT_IDS = "former_client_ids"  # the ids it had before, comma-separated (docs/sync.md)
HLC_LAST = "hlc_last"  # the last stamp issued: stamps keep increasing across runs, whatever the wall clock
CLOCK_OFFSET_MS = "clock_offset_ms"  # how far the server's clock is ahead of this device's
# The account this home is bound to (the token itself is in credentials.json)
ACCOUNT_USERNAME = "account_username"
ACCOUNT_SERVER = "account_server"
ACCOUNT_ROLE = "account_role"  # athlete | coach: a coach's home refuses writes
ACCOUNT_ID = "account_id"  # the server's id of the account (`/v1/me`): a name reused later is another account
OWNER_USER_ID = "owner_user_id"  # the server's id of this device's user, learned from the shape
# Sync state
LAST_SYNC = "last_sync"  # when the last round ended (ISO, UTC)
BREAKER = "breaker"  # the client breaker's state, as JSON (sync/breaker.py)
CONFLICTS_VERSION = "conflicts_version"  # the conflict audit's version held here
SHAPE_SCHEMA = "shape_schema"  # the shape's electric-schema, kept for live responses that lack it
REFETCHING = "refetching"  # "1" while a snapshot is being pulled: the view is made again once it is done
ERASURES_AFTER = "erasures_after"  # the id of the newest erasure applied here (docs/erasure.md)
SCRUB_DUE = "scrub_due"  # "1" while an erasure's days still have to be scrubbed from the store's files
# `pulse agent --serve`
SHAPE_LOG_ID = "shape_log_id"  # names the device's shape log: a new one means new handles
WEB_PASSWORD = "web_password"  # the salted scrypt hash of the password the sync server last confirmed
RELAYED_PRUNED = "relayed_pruned"  # {browser client id: highest seq whose relayed result was pruned}, JSON


def shape_user(server_id: object) -> str:
    """A coach's athlete, by the server's user id (shape deletes carry only the key): their username."""
    return f"shape_user:{server_id}"
