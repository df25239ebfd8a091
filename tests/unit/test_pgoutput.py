"""The pgoutput decoder, fed binary messages built by hand exactly as the PostgreSQL manual lays them out.

Reference: "Logical Replication Message Formats" (protocol versions 1 and 2). Every integer is big-endian;
strings are NUL-terminated; a tuple is Int16 column count, then per column 'n' (null), 'u' (unchanged
TOASTed value) or 't' + Int32 length + that many bytes of text.
"""

from __future__ import annotations

import struct

import pytest

from pulse_server.replication.pgoutput import (
    EPOCH_2000_US,
    Begin,
    Change,
    Column,
    Commit,
    DecodeError,
    Decoder,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
)

ENTRIES_OID = 16_385
USERS_OID = 16_390
TEXT_OID, INT8_OID, DATE_OID, INT4_OID, NUMERIC_OID = 25, 20, 1082, 23, 1700

# (flags, name, type oid, typmod): flag bit 1 marks a replica identity (key) column.
ENTRIES_COLUMNS = [
    (1, "user_id", INT8_OID, -1),
    (1, "date", DATE_OID, -1),
    (0, "sleep_hours", NUMERIC_OID, (4 << 16 | 2) + 4),
    (0, "steps", INT4_OID, -1),
    (0, "note", TEXT_OID, -1),
]


# -- builders ----------------------------------------------------------------------------------------


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def begin(final_lsn: int, commit_time_us: int, xid: int) -> bytes:
    return b"B" + struct.pack("!QqI", final_lsn, commit_time_us, xid)


def commit(commit_lsn: int, end_lsn: int, commit_time_us: int = 0) -> bytes:
    return b"C" + struct.pack("!BQQq", 0, commit_lsn, end_lsn, commit_time_us)


def relation(
    oid: int = ENTRIES_OID,
    namespace: str = "public",
    name: str = "entries",
    columns: list[tuple[int, str, int, int]] | None = None,
    identity: bytes = b"d",
) -> bytes:
    columns = ENTRIES_COLUMNS if columns is None else columns
    body = struct.pack("!I", oid) + cstring(namespace) + cstring(name) + identity + struct.pack("!H", len(columns))
    for flags, col, type_oid, typmod in columns:
        body += struct.pack("!B", flags) + cstring(col) + struct.pack("!Ii", type_oid, typmod)
    return b"R" + body


def tuple_data(*values: str | bytes | None) -> bytes:
    """Each value: text, None for null, or b"u" for an unchanged TOASTed value."""
    out = struct.pack("!H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == b"u":
            out += b"u"
        else:
            assert isinstance(value, str)
            raw = value.encode()
            out += b"t" + struct.pack("!I", len(raw)) + raw
    return out


def insert(oid: int, new: bytes) -> bytes:
    return b"I" + struct.pack("!I", oid) + b"N" + new


def update(oid: int, new: bytes, old: bytes | None = None, old_kind: bytes = b"K") -> bytes:
    body = b"U" + struct.pack("!I", oid)
    if old is not None:
        body += old_kind + old
    return body + b"N" + new


def delete(oid: int, old: bytes, old_kind: bytes = b"K") -> bytes:
    return b"D" + struct.pack("!I", oid) + old_kind + old


def truncate(*oids: int, options: int = 0) -> bytes:
    return b"T" + struct.pack("!IB", len(oids), options) + b"".join(struct.pack("!I", o) for o in oids)


def stream_start(xid: int, first: bool) -> bytes:
    return b"S" + struct.pack("!IB", xid, first)


def stream_commit(xid: int, commit_lsn: int, end_lsn: int, commit_time_us: int) -> bytes:
    return b"c" + struct.pack("!IBQQq", xid, 0, commit_lsn, end_lsn, commit_time_us)


def stream_abort(xid: int, subxid: int) -> bytes:
    return b"A" + struct.pack("!II", xid, subxid)


def in_block(message: bytes, xid: int) -> bytes:
    """A message inside a streamed block: the (sub)transaction's xid follows its kind."""
    return message[:1] + struct.pack("!I", xid) + message[1:]


ROW = ("42", "2026-11-27", "7.50", "8000", "easy day")


@pytest.fixture
def decoder() -> Decoder:
    d = Decoder()
    d.decode(relation())
    return d


# -- transactions ------------------------------------------------------------------------------------


def test_begin_gives_the_final_lsn_the_xid_and_the_commit_time_in_unix_microseconds() -> None:
    lsn = (0x16 << 32) | 0xB374D848
    message = Decoder().decode(begin(lsn, 1_000_000, 777))
    assert message == Begin(final_lsn=lsn, commit_time_us=1_000_000 + EPOCH_2000_US, xid=777)


def test_begin_reads_the_xid_as_unsigned_32_bits() -> None:
    message = Decoder().decode(begin(1, 0, 0xFFFF_FFFE))
    assert isinstance(message, Begin) and message.xid == 4_294_967_294


def test_commit_gives_the_commit_lsn_and_the_end_lsn() -> None:
    assert Decoder().decode(commit(100, 148, 5)) == Commit(commit_lsn=100, end_lsn=148)


# -- relations ---------------------------------------------------------------------------------------


def test_a_relation_names_its_schema_table_and_columns_with_the_key_flag() -> None:
    message = Decoder().decode(relation())
    assert message == Relation(
        oid=ENTRIES_OID,
        namespace="public",
        name="entries",
        columns=(
            Column("user_id", INT8_OID, True),
            Column("date", DATE_OID, True),
            Column("sleep_hours", NUMERIC_OID, False),
            Column("steps", INT4_OID, False),
            Column("note", TEXT_OID, False),
        ),
    )


def test_an_empty_namespace_means_pg_catalog() -> None:
    message = Decoder().decode(relation(oid=11, namespace="", name="pg_thing", columns=[(0, "x", TEXT_OID, -1)]))
    assert isinstance(message, Relation) and message.namespace == "pg_catalog"


def test_a_later_relation_message_for_the_same_oid_replaces_the_columns(decoder: Decoder) -> None:
    decoder.decode(relation(columns=[*ENTRIES_COLUMNS, (0, "weight_kg", NUMERIC_OID, -1)]))
    change = decoder.decode(insert(ENTRIES_OID, tuple_data(*ROW, "71.40")))
    assert isinstance(change, Change) and change.new is not None
    assert change.new["weight_kg"] == "71.40"


# -- row changes -------------------------------------------------------------------------------------


def test_an_insert_gives_every_column_as_postgres_text_and_none_for_null(decoder: Decoder) -> None:
    change = decoder.decode(insert(ENTRIES_OID, tuple_data("42", "2026-11-27", "7.50", None, "")))
    assert isinstance(change, Change)
    assert change.operation == "insert" and change.old is None and change.unchanged == frozenset()
    assert change.relation.name == "entries"
    assert change.new == {"user_id": "42", "date": "2026-11-27", "sleep_hours": "7.50", "steps": None, "note": ""}


def test_text_values_are_decoded_as_utf8(decoder: Decoder) -> None:
    change = decoder.decode(insert(ENTRIES_OID, tuple_data("42", "2026-11-27", None, None, "café ☕ 😴")))
    assert isinstance(change, Change) and change.new is not None
    assert change.new["note"] == "café ☕ 😴"


def test_an_update_without_an_old_tuple_gives_only_the_new_row(decoder: Decoder) -> None:
    change = decoder.decode(update(ENTRIES_OID, tuple_data("42", "2026-11-27", "8.00", "9000", "x")))
    assert isinstance(change, Change)
    assert change.operation == "update" and change.old is None
    assert change.new == {"user_id": "42", "date": "2026-11-27", "sleep_hours": "8.00", "steps": "9000", "note": "x"}


def test_an_update_that_changes_the_key_carries_the_old_key_with_k(decoder: Decoder) -> None:
    old = tuple_data("42", "2026-11-26", None, None, None)
    change = decoder.decode(update(ENTRIES_OID, tuple_data(*ROW), old=old, old_kind=b"K"))
    assert isinstance(change, Change)
    assert change.old == {"user_id": "42", "date": "2026-11-26", "sleep_hours": None, "steps": None, "note": None}
    assert change.new is not None and change.new["date"] == "2026-11-27"


def test_an_update_under_replica_identity_full_carries_the_old_row_with_o(decoder: Decoder) -> None:
    old = tuple_data("42", "2026-11-27", "6.00", "100", "before")
    change = decoder.decode(update(ENTRIES_OID, tuple_data(*ROW), old=old, old_kind=b"O"))
    assert isinstance(change, Change) and change.old is not None and change.new is not None
    assert (change.old["steps"], change.new["steps"]) == ("100", "8000")


def test_an_unchanged_toasted_value_is_left_out_of_the_row_and_named_in_unchanged(decoder: Decoder) -> None:
    change = decoder.decode(update(ENTRIES_OID, tuple_data("42", "2026-11-27", "7.50", "9000", b"u")))
    assert isinstance(change, Change) and change.new is not None
    assert "note" not in change.new
    assert change.unchanged == frozenset({"note"})
    assert change.new == {"user_id": "42", "date": "2026-11-27", "sleep_hours": "7.50", "steps": "9000"}


def test_a_delete_carries_the_old_key_and_no_new_row(decoder: Decoder) -> None:
    change = decoder.decode(delete(ENTRIES_OID, tuple_data("42", "2026-11-27", None, None, None)))
    assert isinstance(change, Change)
    assert change.operation == "delete" and change.new is None
    assert change.old is not None and (change.old["user_id"], change.old["date"]) == ("42", "2026-11-27")


def test_a_delete_under_replica_identity_full_carries_the_whole_old_row(decoder: Decoder) -> None:
    change = decoder.decode(delete(ENTRIES_OID, tuple_data(*ROW), old_kind=b"O"))
    assert isinstance(change, Change) and change.old == dict(
        zip(("user_id", "date", "sleep_hours", "steps", "note"), ROW, strict=True))


def test_a_row_change_names_its_own_relation_when_several_are_known(decoder: Decoder) -> None:
    decoder.decode(relation(oid=USERS_OID, name="users", columns=[(1, "id", INT8_OID, -1), (0, "username", 25, -1)]))
    a = decoder.decode(insert(USERS_OID, tuple_data("7", "ann")))
    b = decoder.decode(insert(ENTRIES_OID, tuple_data(*ROW)))
    assert isinstance(a, Change) and isinstance(b, Change)
    assert (a.relation.name, a.new) == ("users", {"id": "7", "username": "ann"})
    assert b.relation.name == "entries"


def test_a_tuple_with_more_values_than_known_columns_names_the_extra_ones_by_position(decoder: Decoder) -> None:
    change = decoder.decode(insert(ENTRIES_OID, tuple_data(*ROW, "extra")))
    assert isinstance(change, Change) and change.new is not None and change.new["col5"] == "extra"


# -- truncate and messages the shape log ignores ------------------------------------------------------


def test_a_truncate_names_the_known_relations(decoder: Decoder) -> None:
    decoder.decode(relation(oid=USERS_OID, name="users", columns=[(1, "id", INT8_OID, -1)]))
    message = decoder.decode(truncate(ENTRIES_OID, USERS_OID, options=1))
    assert isinstance(message, Truncate)
    assert [r.name for r in message.relations] == ["entries", "users"]


def test_a_truncate_of_a_relation_never_described_names_nothing(decoder: Decoder) -> None:
    message = decoder.decode(truncate(99_999))
    assert message == Truncate(())


@pytest.mark.parametrize(
    "data",
    [
        b"Y" + struct.pack("!I", 600) + cstring("public") + cstring("mood"),
        b"O" + struct.pack("!Q", 5) + cstring("origin_a"),
        b"M" + struct.pack("!BQ", 1, 5) + cstring("prefix") + struct.pack("!I", 2) + b"hi",
    ],
    ids=["type", "origin", "logical-message"],
)
def test_type_origin_and_logical_messages_decode_to_none(data: bytes) -> None:
    assert Decoder().decode(data) is None


def test_a_whole_transaction_decodes_in_order() -> None:
    d = Decoder()
    stream = [
        begin(500, 0, 9),
        relation(),
        insert(ENTRIES_OID, tuple_data(*ROW)),
        update(ENTRIES_OID, tuple_data("42", "2026-11-27", "7.50", "8100", b"u")),
        delete(ENTRIES_OID, tuple_data("42", "2026-11-26", None, None, None)),
        commit(500, 548),
    ]
    decoded = [d.decode(m) for m in stream]
    assert [type(m).__name__ for m in decoded] == ["Begin", "Relation", "Change", "Change", "Change", "Commit"]
    assert [m.operation for m in decoded if isinstance(m, Change)] == ["insert", "update", "delete"]


# -- streamed transactions (protocol version 2) -------------------------------------------------------


def test_a_streamed_block_names_its_transaction_and_each_change_the_subtransaction_it_belongs_to() -> None:
    d = Decoder()
    stream = [
        stream_start(700, True),
        in_block(relation(), 700),
        in_block(insert(ENTRIES_OID, tuple_data(*ROW)), 700),
        in_block(update(ENTRIES_OID, tuple_data(*ROW)), 701),  # in a savepoint
        in_block(delete(ENTRIES_OID, tuple_data("42", "2026-11-26", None, None, None)), 0xFFFFFFF0),
        in_block(truncate(ENTRIES_OID), 701),
        b"O" + struct.pack("!Q", 5) + cstring("origin_a"),  # an origin carries no xid, in a block or not
        b"E",
    ]
    decoded = [d.decode(m) for m in stream]
    assert decoded[0] == StreamStart(700, True)
    assert isinstance(decoded[1], Relation) and decoded[1].name == "entries"
    assert [(m.operation, m.xid) for m in decoded[2:5] if isinstance(m, Change)] == [
        ("insert", 700), ("update", 701), ("delete", 0xFFFFFFF0)]
    assert isinstance(decoded[2], Change) and decoded[2].new == dict(zip(("user_id", "date", "sleep_hours",
                                                                           "steps", "note"), ROW, strict=True))
    assert isinstance(decoded[5], Truncate) and decoded[5].xid == 701 and decoded[5].relations[0].name == "entries"
    assert decoded[6] is None
    assert decoded[7] == StreamStop()


def test_after_a_stream_stop_messages_carry_no_xid_again(decoder: Decoder) -> None:
    decoder.decode(stream_start(700, False))
    decoder.decode(b"E")
    change = decoder.decode(insert(ENTRIES_OID, tuple_data(*ROW)))
    assert isinstance(change, Change) and change.xid == 0 and change.new is not None
    assert change.new["user_id"] == "42"


def test_a_stream_commit_gives_the_xid_the_lsns_and_the_commit_time_in_unix_microseconds() -> None:
    assert Decoder().decode(stream_commit(0xFFFFFFFE, 900, 948, 1_000_000)) == StreamCommit(
        0xFFFFFFFE, 900, 948, 1_000_000 + EPOCH_2000_US)


def test_a_stream_abort_names_the_transaction_and_the_subtransaction() -> None:
    assert Decoder().decode(stream_abort(700, 701)) == StreamAbort(700, 701)
    assert Decoder().decode(stream_abort(700, 700)) == StreamAbort(700, 700)


# -- malformed input ---------------------------------------------------------------------------------


def test_an_empty_message_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        Decoder().decode(b"")


def test_an_unknown_message_kind_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown"):
        Decoder().decode(b"Z\0\0\0\0")


def test_a_row_change_for_a_relation_never_described_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown relation"):
        Decoder().decode(insert(ENTRIES_OID, tuple_data(*ROW)))


@pytest.mark.parametrize(
    "data",
    [
        b"I" + struct.pack("!I", ENTRIES_OID) + b"X" + tuple_data(*ROW),  # insert: N expected
        b"U" + struct.pack("!I", ENTRIES_OID) + b"X" + tuple_data(*ROW),  # update: K, O or N expected
        update(ENTRIES_OID, tuple_data(*ROW), old=tuple_data(*ROW))[:-len(tuple_data(*ROW)) - 1]
        + b"X" + tuple_data(*ROW),  # update: N expected after the old tuple
        b"D" + struct.pack("!I", ENTRIES_OID) + b"N" + tuple_data(*ROW),  # delete: K or O expected
        insert(ENTRIES_OID, struct.pack("!H", 1) + b"b" + struct.pack("!I", 1) + b"\x01"),  # binary values
        insert(ENTRIES_OID, struct.pack("!H", 1) + b"?"),
    ],
    ids=["insert-marker", "update-marker", "update-new-marker", "delete-marker", "binary-value", "bad-kind"],
)
def test_a_wrong_marker_or_value_kind_raises_decode_error(decoder: Decoder, data: bytes) -> None:
    with pytest.raises(DecodeError):
        decoder.decode(data)


FIXED_SIZE_MESSAGES = {
    "begin": begin(500, 1, 9),
    "commit": commit(500, 548, 1),
    "truncate": truncate(ENTRIES_OID, USERS_OID),
    "stream-start": stream_start(700, True),
    "stream-commit": stream_commit(700, 900, 948, 1),
    "stream-abort": stream_abort(700, 701),
}


@pytest.mark.parametrize("name", sorted(FIXED_SIZE_MESSAGES))
def test_every_truncation_of_a_fixed_size_message_raises_decode_error(name: str) -> None:
    data = FIXED_SIZE_MESSAGES[name]
    for cut in range(1, len(data)):
        with pytest.raises(DecodeError):
            Decoder().decode(data[:cut])


def _cuts_outside_text(data: bytes, text_spans: list[tuple[int, int]]) -> list[int]:
    return [cut for cut in range(1, len(data)) if not any(start <= cut < end for start, end in text_spans)]


def test_truncating_a_row_change_anywhere_but_inside_a_text_value_raises_decode_error(decoder: Decoder) -> None:
    for data in (
        insert(ENTRIES_OID, tuple_data(*ROW)),
        update(ENTRIES_OID, tuple_data(*ROW), old=tuple_data(*ROW)),
        delete(ENTRIES_OID, tuple_data("42", "2026-11-27", None, None, None)),
    ):
        # A cut inside a value's bytes is the known gap tested below; every other cut must be refused.
        cuts = _cuts_outside_text(data, _text_spans(data))
        assert len(cuts) >= 20
        for cut in cuts:
            with pytest.raises(DecodeError):
                decoder.decode(data[:cut])


def test_truncating_a_relation_anywhere_but_inside_a_name_raises_decode_error() -> None:
    data = relation()
    names = ["public", "entries", *(c[1] for c in ENTRIES_COLUMNS)]
    spans = []
    for name in names:
        start = data.index(cstring(name))
        spans.append((start, start + len(name) + 1))  # a cut from the name's first byte to its NUL
    cuts = _cuts_outside_text(data, spans)
    assert len(cuts) > 30
    for cut in cuts:
        with pytest.raises(DecodeError):
            Decoder().decode(data[:cut])


def _text_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each 't' value's bytes in a row-change message built by the helpers above."""
    spans = []
    for value in (*ROW, "2026-11-27", "42"):
        raw = value.encode()
        start = data.find(struct.pack("!I", len(raw)) + raw)
        while start != -1:
            spans.append((start + 4, start + 4 + len(raw)))
            start = data.find(struct.pack("!I", len(raw)) + raw, start + 1)
    return spans


def test_a_text_value_cut_short_raises_decode_error(decoder: Decoder) -> None:
    data = insert(ENTRIES_OID, tuple_data(*ROW))
    with pytest.raises(DecodeError):
        decoder.decode(data[:-3])  # the note "easy day" loses its last 3 bytes


def test_a_relation_cut_inside_a_name_raises_decode_error() -> None:
    data = relation()
    with pytest.raises(DecodeError):
        Decoder().decode(data[: data.index(b"entries") + 3])


def test_invalid_utf8_in_a_value_raises_decode_error(decoder: Decoder) -> None:
    bad = struct.pack("!H", 1) + b"t" + struct.pack("!I", 2) + b"\xff\xfe"
    with pytest.raises(DecodeError):
        decoder.decode(insert(ENTRIES_OID, bad))
