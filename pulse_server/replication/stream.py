"""A logical replication stream: `START_REPLICATION` over psycopg 3's low-level (libpq) copy interface.

psycopg 3 has no replication API, but a connection opened with `replication=database` accepts the
replication commands, and `pgconn` exposes libpq's COPY calls. The walsender then decodes each WAL
record once, as it is written, and sends our publication's transactions as they commit. (Reading
with `pg_logical_slot_peek_binary_changes` instead decodes again from the slot's restart point on
every call, and Postgres moves that point only when it logs the running transactions, every 15
seconds or so: under a steady write load each peek and each advance re-read up to 15 s of WAL.)

Messages (PostgreSQL manual, "Streaming Replication Protocol"): the server sends XLogData (`w`: start,
end, send time, then one pgoutput message) and keepalives (`k`: its WAL position, send time, whether
it wants an answer); we send standby status updates (`r`), whose flush position is what the slot
keeps as confirmed. Nothing here decides when that is: the reader acknowledges a position only after
the shape log has committed everything before it.

With `streaming`, pgoutput protocol version 2 (Postgres 14+) with `streaming 'on'`: a transaction
whose changes outgrow the walsender's `logical_decoding_work_mem` (64 MB unless set) is sent in blocks
while it runs, instead of being spilled to the server's disk and sent after its commit.
"""

from __future__ import annotations

import contextlib
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql

from pulse_server.replication.pgoutput import EPOCH_2000_US

_XLOG_DATA = struct.Struct("!QQq")  # after the 'w': start, end, send time
_KEEPALIVE = struct.Struct("!Qq?")  # after the 'k': server WAL end, send time, reply requested
_STATUS = struct.Struct("!cQQQq?")  # 'r', written, flushed, applied, send time, reply requested


@dataclass(frozen=True)
class Received:
    """What one read of the socket brought: pgoutput messages in order, and the server's WAL position
    from the last keepalive (every message before that keepalive has been received)."""

    messages: list[bytes]
    server_end: int  # 0 when no keepalive came
    reply_requested: bool


class WalStream:
    """One replication connection streaming one slot, from the position the slot has confirmed."""

    def __init__(
        self, dsn: str, slot: str, publication: str, application_name: str = "pulse-replication-stream",
        streaming: bool = False,
    ) -> None:
        # TCP keepalives: an idle stream with a half-open connection would otherwise wait forever.
        self.conn: psycopg.Connection[Any] = psycopg.connect(
            dsn, autocommit=True, replication="database", application_name=application_name,
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
        )
        try:
            options = "proto_version '2', streaming 'on'" if streaming else "proto_version '1'"
            command = sql.SQL(
                "START_REPLICATION SLOT {} LOGICAL 0/0 ({}, publication_names {})"
            ).format(sql.Identifier(slot), sql.SQL(options), sql.Literal(publication)).as_bytes(self.conn)
            pgconn = self.conn.pgconn
            pgconn.send_query(command)
            result = pgconn.get_result()
            if result is None or result.status != pq.ExecStatus.COPY_BOTH:
                raise _failure("START_REPLICATION failed", result)
            pgconn.nonblocking = 1
        except BaseException:
            self.conn.close()
            raise
        self.pgconn = pgconn

    def close(self) -> None:
        self.conn.close()

    def read(self, timeout_s: float, limit: int) -> Received:
        """Whatever the server has sent, without waiting once something came (at most `limit` messages);
        if nothing is there yet, wait up to `timeout_s` for it."""
        messages: list[bytes] = []
        server_end, reply = 0, False
        consumed = waited = False
        while len(messages) < limit:
            size, data = self.pgconn.get_copy_data(1)  # libpq failures raise OperationalError
            if size > 0:
                kind = data[0]
                if kind == 0x77:  # 'w'
                    messages.append(bytes(data[1 + _XLOG_DATA.size:]))
                elif kind == 0x6B:  # 'k'
                    end, _, wanted = _KEEPALIVE.unpack_from(data, 1)
                    server_end, reply = max(server_end, end), reply or wanted
                continue
            if size < 0:  # the copy ended: the server stopped streaming (shut down, or terminated us)
                raise _failure("replication stream ended", self.pgconn.get_result())
            if messages or server_end:
                break
            if not consumed:  # what the socket (or TLS, which a poll cannot see) holds and libpq has not read
                consumed = True
                self.pgconn.consume_input()
                continue
            if waited or not self._wait(select.POLLIN, timeout_s):
                break
            waited = True
            self.pgconn.consume_input()
        return Received(messages, server_end, reply)

    def _wait(self, events: int, timeout_s: float) -> bool:
        """Whether the socket became ready (poll, not select: a descriptor may be past 1024)."""
        poller = select.poll()
        poller.register(self.pgconn.socket, events)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))

    def acknowledge(self, lsn: int, reply_requested: bool = False) -> None:
        """Tell the server everything up to `lsn` is durable on our side: the slot's confirmed position."""
        now_us = int(time.time() * 1_000_000) - EPOCH_2000_US
        message = _STATUS.pack(b"r", lsn, lsn, lsn, now_us, reply_requested)
        deadline = time.monotonic() + 10.0
        while self.pgconn.put_copy_data(message) != 1:  # 0: libpq's buffer is full; flush and retry
            if time.monotonic() > deadline:
                raise psycopg.OperationalError("replication stream: a status update could not be queued")
            self._flush(deadline)
        self._flush(deadline)

    def _flush(self, deadline: float) -> None:
        while self.pgconn.flush() == 1:  # the rest is still in libpq's buffer
            if time.monotonic() > deadline:
                raise psycopg.OperationalError("replication stream: a status update could not be sent")
            self._wait(select.POLLOUT, 1.0)


def _failure(what: str, result: pq.abc.PGresult | None) -> psycopg.Error:
    """The server's error as psycopg's class for its SQLSTATE (e.g. ObjectInUse: the slot is taken)."""
    if result is None:
        return psycopg.OperationalError(f"{what}: no answer")
    message = result.error_message.decode(errors="replace").strip() or "no reason given"
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    kind: type[psycopg.Error] = psycopg.OperationalError
    if state:
        with contextlib.suppress(KeyError):
            kind = psycopg.errors.lookup(state.decode())
    return kind(f"{what}: {message}")
