"""A decoder for the pgoutput logical replication protocol (versions 1 and 2), with no I/O.

Only what the shape log needs: transactions (Begin/Commit) and row changes (Relation, Insert,
Update, Delete, Truncate), with column values in Postgres text format, exactly as Electric sends them.
Version 2 (Postgres 14+, `streaming 'on'`) adds in-progress transactions sent in blocks before they
commit: Stream Start/Stop around each block (whose messages carry the xid of the transaction or
subtransaction they belong to), then Stream Commit, or Stream Abort of the transaction or of one
subtransaction. Reference: "Logical Replication Message Formats" in the PostgreSQL manual.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

EPOCH_2000_US = 946_684_800_000_000


class DecodeError(ValueError):
    pass


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    columns: tuple[Column, ...]

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time_us: int
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int


@dataclass(frozen=True)
class Change:
    relation: Relation
    operation: str  # "insert" | "update" | "delete"
    new: dict[str, str | None] | None  # text values; None for a delete
    old: dict[str, str | None] | None  # key (or full old row with REPLICA IDENTITY FULL)
    unchanged: frozenset[str] = field(default_factory=frozenset)  # unchanged TOAST columns
    xid: int = 0  # in a streamed block: the (sub)transaction it belongs to; 0 otherwise


@dataclass(frozen=True)
class Truncate:
    relations: tuple[Relation, ...]
    xid: int = 0  # as Change.xid


@dataclass(frozen=True)
class StreamStart:
    xid: int  # the top-level transaction the block belongs to
    first: bool  # its first block on this stream


@dataclass(frozen=True)
class StreamStop:
    pass


@dataclass(frozen=True)
class StreamCommit:
    xid: int
    commit_lsn: int
    end_lsn: int
    commit_time_us: int  # Unix microseconds


@dataclass(frozen=True)
class StreamAbort:
    xid: int
    subxid: int  # equal to xid when the whole transaction aborted


Message = Begin | Commit | Relation | Change | Truncate | StreamStart | StreamStop | StreamCommit | StreamAbort | None


class Decoder:
    """Stateful: remembers Relation messages so row changes can name their columns, and whether a streamed
    block is open (inside one, every message but Origin carries an xid after its kind)."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.streaming = False

    def decode(self, data: bytes) -> Message:
        if not data:
            raise DecodeError("empty message")
        kind = data[0:1]
        reader = _Reader(data, 1)
        if kind in _STREAM_CONTROL:
            return self._stream_control(kind, reader)
        xid = 0
        if self.streaming and kind != b"O":
            (xid,) = reader.unpack("!I")
        if kind == b"B":
            lsn, ts, xid = reader.unpack("!QqI")
            return Begin(lsn, ts + EPOCH_2000_US, xid)
        if kind == b"C":
            _flags, commit_lsn, end_lsn, _ts = reader.unpack("!BQQq")
            return Commit(commit_lsn, end_lsn)
        if kind == b"R":
            (oid,) = reader.unpack("!I")
            namespace, name = reader.string(), reader.string()
            _identity, ncols = reader.unpack("!BH")
            columns = []
            for _ in range(ncols):
                (flags,) = reader.unpack("!B")
                col_name = reader.string()
                type_oid, _typmod = reader.unpack("!Ii")
                columns.append(Column(col_name, type_oid, bool(flags & 1)))
            relation = Relation(oid, namespace or "pg_catalog", name, tuple(columns))
            self.relations[oid] = relation
            return relation
        if kind == b"I":
            relation = self._relation(reader)
            reader.expect(b"N")
            new, unchanged = reader.tuple(relation)
            return Change(relation, "insert", new, None, unchanged, xid)
        if kind == b"U":
            relation = self._relation(reader)
            old = None
            marker = reader.byte()
            if marker in (b"K", b"O"):
                old, _ = reader.tuple(relation)
                marker = reader.byte()
            if marker != b"N":
                raise DecodeError(f"update: expected N, got {marker!r}")
            new, unchanged = reader.tuple(relation)
            return Change(relation, "update", new, old, unchanged, xid)
        if kind == b"D":
            relation = self._relation(reader)
            marker = reader.byte()
            if marker not in (b"K", b"O"):
                raise DecodeError(f"delete: expected K or O, got {marker!r}")
            old, _ = reader.tuple(relation)
            return Change(relation, "delete", None, old, xid=xid)
        if kind == b"T":
            count, _options = reader.unpack("!IB")
            oids = reader.unpack("!" + "I" * count)
            return Truncate(tuple(self.relations[o] for o in oids if o in self.relations), xid)
        if kind in (b"Y", b"O", b"M"):  # types, origins, logical messages: nothing for the shape log
            return None
        raise DecodeError(f"unknown pgoutput message {kind!r}")

    def _stream_control(self, kind: bytes, reader: _Reader) -> Message:
        if kind == b"S":
            xid, first = reader.unpack("!IB")
            self.streaming = True
            return StreamStart(xid, bool(first))
        if kind == b"E":
            self.streaming = False
            return StreamStop()
        if kind == b"c":
            xid, _flags, commit_lsn, end_lsn, ts = reader.unpack("!IBQQq")
            return StreamCommit(xid, commit_lsn, end_lsn, ts + EPOCH_2000_US)
        xid, subxid = reader.unpack("!II")  # b"A"
        return StreamAbort(xid, subxid)

    def _relation(self, reader: _Reader) -> Relation:
        (oid,) = reader.unpack("!I")
        try:
            return self.relations[oid]
        except KeyError:
            raise DecodeError(f"row change for unknown relation {oid}") from None


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise DecodeError("message truncated")
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def byte(self) -> bytes:
        if self.offset >= len(self.data):
            raise DecodeError("message truncated")
        value = self.data[self.offset:self.offset + 1]
        self.offset += 1
        return value

    def expect(self, marker: bytes) -> None:
        got = self.byte()
        if got != marker:
            raise DecodeError(f"expected {marker!r}, got {got!r}")

    def string(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise DecodeError("unterminated string")
        value = _text(self.data[self.offset:end])
        self.offset = end + 1
        return value

    def tuple(self, relation: Relation) -> tuple[dict[str, str | None], frozenset[str]]:
        # The hot loop of the reader (every column of every change): locals, no method calls.
        data, offset = self.data, self.offset
        if offset + 2 > len(data):
            raise DecodeError("message truncated")
        (ncols,) = _U16.unpack_from(data, offset)
        offset += 2
        names = relation.names
        values: dict[str, str | None] = {}
        unchanged = set()
        try:
            for index in range(ncols):
                name = names[index] if index < len(names) else f"col{index}"
                kind = data[offset]
                offset += 1
                if kind == 0x74:  # t: text
                    (length,) = _U32.unpack_from(data, offset)
                    offset += 4
                    end = offset + length
                    if end > len(data):
                        raise DecodeError("message truncated inside a value")
                    values[name] = data[offset:end].decode()
                    offset = end
                elif kind == 0x6E:  # n: null
                    values[name] = None
                elif kind == 0x75:  # u: unchanged TOASTed value, not sent
                    unchanged.add(name)
                else:
                    raise DecodeError(f"unsupported tuple value kind {bytes([kind])!r}")
        except (IndexError, struct.error):
            raise DecodeError("message truncated") from None
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8: {exc.reason}") from None
        self.offset = offset
        return values, frozenset(unchanged)


_STREAM_CONTROL = (b"S", b"E", b"c", b"A")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8: {exc.reason}") from None
