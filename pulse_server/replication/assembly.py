"""pgoutput messages into whole transactions, in commit order, holding a bounded part of any of them.

A transaction sent whole (Begin ... Commit) is kept in memory up to `spill_changes` changes; past that,
its changes go to the staging table (`staging.py`) as they come, `spill_changes` at a time. A
transaction streamed while it runs (pgoutput version 2: blocks between Stream Start and Stream Stop,
any number of transactions interleaved, each ended by Stream Commit or Stream Abort) is always staged:
Postgres streams only what outgrew its `logical_decoding_work_mem`. Either way what comes out is the
list of committed transactions in commit order, the staged ones marked so (docs/shapes.md, "Big
transactions").
"""

from __future__ import annotations

from typing import Any

import psycopg

from pulse_server.replication.batch import Transaction, erasure_record, synced
from pulse_server.replication.pgoutput import (
    Begin,
    Change,
    Commit,
    Decoder,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
)
from pulse_server.replication.staging import Staging, Usernames


class Assembler:
    """One per stream: a new stream starts with a new decoder and nothing half read."""

    def __init__(self, staging: Staging, spill_changes: int, usernames: Usernames) -> None:
        self.decoder = Decoder()
        self.staging = staging
        self.spill_changes = spill_changes
        self.usernames = usernames
        self.partial: Transaction | None = None  # sent whole, its Commit not here yet
        self.block_xid: int | None = None  # the transaction of the streamed block being read
        self.block: list[Change | Truncate] = []  # that block's changes not yet staged

    def feed(self, conn: psycopg.Connection[Any], messages: list[bytes]) -> list[Transaction]:
        """The transactions these messages complete, in commit order (staging what must be)."""
        done: list[Transaction] = []
        for data in messages:
            message = self.decoder.decode(data)
            if isinstance(message, (Change, Truncate)):
                if synced(message) or erasure_record(message):
                    self._change(conn, message)
            elif isinstance(message, Begin):
                self.partial = Transaction(message)
            elif isinstance(message, Commit):
                if (tx := self.partial) is not None:
                    tx.commit, self.partial = message, None
                    if tx.staged:
                        self._stage(conn, tx.begin.xid, tx.changes)
                    done.append(tx)
            elif isinstance(message, StreamStart):
                self.block_xid = message.xid
            elif isinstance(message, StreamStop):
                if self.block_xid is not None:
                    self._stage(conn, self.block_xid, self.block)
                self.block_xid = None
            elif isinstance(message, StreamAbort):
                self.staging.abort(conn, message.xid, message.subxid)
            elif isinstance(message, StreamCommit):
                # Offsets as for a transaction sent whole: the commit's LSN, and its xid.
                done.append(Transaction(Begin(message.commit_lsn, message.commit_time_us, message.xid), [],
                                        Commit(message.commit_lsn, message.end_lsn), staged=True))
        return done

    def _change(self, conn: psycopg.Connection[Any], change: Change | Truncate) -> None:
        if self.block_xid is not None:
            self.block.append(change)
            if len(self.block) >= self.spill_changes:
                self._stage(conn, self.block_xid, self.block)
        elif (tx := self.partial) is not None:
            tx.changes.append(change)
            if len(tx.changes) >= self.spill_changes:
                tx.staged = True
                self._stage(conn, tx.begin.xid, tx.changes)

    def _stage(self, conn: psycopg.Connection[Any], xid: int, changes: list[Change | Truncate]) -> None:
        if changes:
            self.staging.add(conn, xid, changes, self.usernames)
            changes.clear()
