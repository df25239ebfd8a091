"""The client `where` parser: a small SQL grammar over an allow-list of columns, evaluated on text rows.

The predicate must agree with what Postgres would say for the same clause on the same row (rows are
the Postgres text form, as they travel on the wire), and anything outside the grammar is a WhereError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse_server.shapes.where import COLUMN_TYPES, WhereError, parse_where

ROW: dict[str, str | None] = {
    "user_id": "42",
    "date": "2026-11-27",
    "username": "ann",
    "sleep_hours": "7.50",
    "hrv_ms": "48.50",
    "hrv_method": "rmssd",
    "steps": "1000",
    "weight_kg": "71.40",
    "note": "it's fine",
    "score": "79",
    "score_version": "1",
    "deleted": "f",
}
EMPTY: dict[str, str | None] = {**dict.fromkeys(ROW), "user_id": "42", "date": "2026-11-27", "deleted": "f"}


def holds(where: str, row: Mapping[str, str | None] = ROW, params: Mapping[str, str] | None = None) -> bool:
    return parse_where(where, params or {})(row)


# -- grammar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("steps = 1000", True),
        ("steps <> 1000", False),
        ("steps != 999", True),
        ("steps < 1001", True),
        ("steps <= 1000", True),
        ("steps > 1000", False),
        ("steps >= 1000", True),
        ("hrv_method = 'rmssd'", True),
        ("hrv_method = 'sdnn'", False),
        ("username = 'ann'", True),
        ("note = 'it''s fine'", True),  # '' is an escaped quote
        ('"steps" = 1000', True),  # a quoted identifier
        ("steps IN (5, 1000, 7)", True),
        ("steps IN (5, 7)", False),
        ("steps NOT IN (5, 7)", True),
        ("hrv_method IN ('sdnn')", False),
        ("steps IS NOT NULL", True),
        ("steps IS NULL", False),
        ("NOT steps = 1000", False),
        ("NOT NOT steps = 1000", True),
        ("(steps = 1000)", True),
        ("((steps = 1000))", True),
        ("steps = 1 OR steps = 1000", True),
        ("steps = 1000 AND note = 'nope'", False),
        # AND binds tighter than OR: true OR (false AND false)
        ("steps = 1000 OR steps = 1 AND note = 'nope'", True),
        # parentheses override it: (true OR false) AND false
        ("(steps = 1000 OR steps = 1) AND note = 'nope'", False),
        ("steps > 5 and steps < 5000 or steps = 1", True),  # keywords in any case
    ],
)
def test_a_clause_holds_exactly_when_postgres_would_say_true(where: str, expected: bool) -> None:
    assert holds(where) is expected


def test_whitespace_and_newlines_between_tokens_do_not_matter() -> None:
    assert holds("  steps\n>=\t1000\n  AND\nhrv_method='rmssd'  ")


def test_every_allow_listed_column_can_be_filtered_with_is_not_null() -> None:
    for column in COLUMN_TYPES:
        assert holds(f"{column} IS NOT NULL") is (ROW[column] is not None)


# -- parameters --------------------------------------------------------------------------------------


def test_a_positional_parameter_takes_its_value_from_params() -> None:
    assert holds("steps > $1", params={"1": "999"})
    assert not holds("steps > $1", params={"1": "1000"})
    assert holds("date >= $1 AND hrv_method = $2", params={"1": "2026-11-01", "2": "rmssd"})


def test_a_parameter_is_a_value_never_sql() -> None:
    predicate = parse_where("note = $1", {"1": "x' OR '1'='1"})
    assert predicate(ROW) is False
    assert predicate({**ROW, "note": "x' OR '1'='1"}) is True


def test_a_missing_parameter_is_a_where_error() -> None:
    with pytest.raises(WhereError, match=r"params\[2\]"):
        parse_where("steps > $1 AND steps < $2", {"1": "5"})


def test_a_parameter_that_is_not_a_value_of_the_column_is_a_where_error() -> None:
    with pytest.raises(WhereError):
        parse_where("date = $1", {"1": "yesterday-ish"})
    with pytest.raises(WhereError):
        parse_where("steps = $1", {"1": "many"})


# -- types -------------------------------------------------------------------------------------------


def test_numbers_compare_as_numbers_not_as_text() -> None:
    assert holds("steps > 900")  # "1000" < "900" as text
    assert holds("sleep_hours = 7.5")  # "7.50" on the wire
    assert holds("weight_kg = 71.40") and holds("weight_kg < 100")
    assert holds("hrv_ms > 48.4999") and not holds("hrv_ms > 48.5")
    assert holds("steps > -1")


def test_a_quoted_number_is_read_as_the_columns_type() -> None:
    assert holds("steps = '1000'") and holds("sleep_hours = '7.5'")


def test_dates_compare_as_dates() -> None:
    assert holds("date = '2026-11-27'")
    assert holds("date > '2026-02-28'") and holds("date < '2027-01-01'")
    assert holds("date IN ('2026-11-26', '2026-11-27')")
    assert not holds("date < '2026-11-27'")


@pytest.mark.parametrize("bad", ["'2026-02-30'", "'27/11/2026'", "'soon'", "5"])
def test_a_value_that_is_not_a_date_is_a_where_error(bad: str) -> None:
    with pytest.raises(WhereError):
        parse_where(f"date = {bad}", {})


def test_booleans_read_true_false_and_the_text_forms() -> None:
    deleted = {**ROW, "deleted": "t"}
    assert holds("deleted = true", deleted) and not holds("deleted = false", deleted)
    assert holds("deleted = FALSE") and not holds("deleted = TRUE")
    assert holds("deleted = 't'", deleted) and holds("deleted = 'true'", deleted)
    assert holds("deleted = 'f'") and holds("deleted <> true")


def test_boolean_literals_are_read_as_postgres_reads_them() -> None:
    deleted = {**ROW, "deleted": "t"}
    for literal in ("'TRUE'", "'yes'", "'on'", "'1'", "'T'"):
        assert holds(f"deleted = {literal}", deleted), literal
    with pytest.raises(WhereError):
        parse_where("deleted = 'banana'", {})


@pytest.mark.parametrize(("column", "value"), [("steps", "TRUE"), ("sleep_hours", "'lots'"), ("score", "'7x'")])
def test_a_value_that_is_not_a_number_for_a_numeric_column_is_a_where_error(column: str, value: str) -> None:
    with pytest.raises(WhereError):
        parse_where(f"{column} = {value}", {})


def test_a_non_finite_number_is_refused_when_parsed_not_when_evaluated() -> None:
    for where in ("steps < 'NaN'", "sleep_hours = 'sNaN'", "steps > $1"):
        try:
            predicate = parse_where(where, {"1": "NaN"})
        except WhereError:
            continue
        predicate(ROW)  # must not raise anything


# -- NULL --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["steps = 1", "steps <> 1", "steps < 1", "steps >= 1", "steps IN (1, 2)", "steps NOT IN (1, 2)",
     "note = 'x'", "note <> 'x'", "date IS NULL", "sleep_hours > 0 AND steps IS NULL"],
)
def test_a_comparison_with_a_null_column_never_holds(where: str) -> None:
    assert holds(where, EMPTY) is False


def test_is_null_and_is_not_null_test_for_null() -> None:
    assert holds("steps IS NULL", EMPTY) and not holds("steps IS NOT NULL", EMPTY)
    assert holds("steps IS NULL OR steps > 5000", EMPTY)


def test_a_missing_column_in_the_row_reads_as_null() -> None:
    assert holds("note IS NULL", {"date": "2026-11-27"}) and not holds("note = 'x'", {"date": "2026-11-27"})


def test_not_of_a_comparison_with_null_is_not_true_as_in_sql() -> None:
    assert holds("NOT steps > 5", EMPTY) is False
    assert holds("NOT (steps > 5 OR note = 'x')", {**EMPTY, "note": "y"}) is False


# -- rejection ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "",
        "   ",
        "steps",
        "steps >",
        "> 5",
        "steps > 5 AND",
        "steps > 5 OR OR steps < 1",
        "(steps > 5",
        "steps > 5)",
        "steps = 5 5",
        "steps NOT = 5",
        "steps IS 5",
        "steps IS NOT 'x'",
        "steps IN ()",
        "steps IN (1,)",
        "steps IN 1, 2",
        "steps = NULL",
        "steps = note",
        "note = \"x\"",
        "password = 'x'",
        "password_hash = 'x'",
        "user_id = 1",
        "sleep_hours_hlc = 'x'",
        "updated_at > '2026-01-01'",
        "1 = 1",
        "'a' = 'a'",
        "steps > 1; DROP TABLE entries",
        "1=1; drop table entries",
        "steps > 1 -- comment",
        "steps > 1 /* comment */",
        "steps::text = '1'",
        "CAST(steps AS text) = '1'",
        "lower(note) = 'x'",
        "steps > (SELECT 1)",
        "steps IN (SELECT steps FROM entries)",
        "EXISTS (SELECT 1 FROM users)",
        "steps > 0 OR EXISTS (SELECT 1)",
        "note LIKE '%x%'",
        "note ILIKE 'x'",
        "steps BETWEEN 1 AND 5",
        "steps + 1 > 5",
        "steps > 1e3",
        "note = 'unterminated",
        "note = E'\\x41'",
        "note = $$x$$",
        "steps = $0x",
        "pg_sleep(10) IS NULL",
        "steps > 1 UNION SELECT password_hash FROM users",
        "\"Steps\" = 1",
        "\"steps\"\"\" = 1",
        "steps = 1 ;",
        "steps = 1\x00",
        "steps ≥ 1",
        "NOT deleted",
        "deleted",
    ],
)
def test_anything_outside_the_grammar_is_a_where_error(where: str) -> None:
    with pytest.raises(WhereError):
        parse_where(where, {"1": "5"})


def test_a_very_long_clause_is_refused() -> None:
    long = " OR ".join(["steps = 1"] * 60)  # 239 tokens
    with pytest.raises(WhereError, match="too long"):
        parse_where(long, {})
    assert holds(" OR ".join(["steps = 1"] * 40 + ["steps = 1000"]))


def test_deep_nesting_within_the_token_limit_parses() -> None:
    assert holds("(" * 95 + "steps = 1000" + ")" * 95)
    assert holds("NOT " * 190 + "steps = 1000")


def test_the_allow_list_holds_no_key_bookkeeping_or_account_column() -> None:
    assert not {"user_id", "password_hash", "updated_at", "is_coach"} & set(COLUMN_TYPES)
    assert not any(c.endswith(("_hlc", "_src")) for c in COLUMN_TYPES)


# -- properties --------------------------------------------------------------------------------------


@settings(max_examples=300, database=None)
@given(text=st.text(max_size=120), params=st.dictionaries(st.sampled_from(["1", "2", "x"]), st.text(max_size=20)))
def test_arbitrary_text_never_raises_anything_but_where_error(text: str, params: dict[str, str]) -> None:
    with contextlib.suppress(WhereError):
        parse_where(text, params)


TOKENS = [
    *COLUMN_TYPES, "password", "user_id", '"steps"', "AND", "OR", "NOT", "IS", "NULL", "IN", "TRUE", "FALSE",
    "=", "<>", "!=", "<", "<=", ">", ">=", "(", ")", ",", ";", "--", "0", "1000", "-3", "7.5", "'2026-11-27'",
    "'rmssd'", "'t'", "''", "'x''y'", "$1", "$2", "$9", "SELECT", "*", "::",
]
NUMBERS = st.sampled_from(["0", "1000", "7.50", "-3", "48.50"])
TEXTS = st.sampled_from(["rmssd", "", "x'y", "2026-11-27", "1000"])
COLUMN_VALUES = {
    "date": st.sampled_from(["2026-11-27", "2026-01-01"]),
    "deleted": st.sampled_from(["t", "f"]),
    **{c: st.one_of(st.none(), TEXTS) for c in ("hrv_method", "note", "username")},
    **{c: st.one_of(st.none(), NUMBERS) for c in ("sleep_hours", "hrv_ms", "steps", "weight_kg", "score",
                                                   "score_version")},
}


# Literals each column takes, as the grammar writes them: well-formed wheres are built from these.
LITERALS = {
    "date": ("'2026-11-27'", "$2"), "deleted": ("TRUE", "FALSE", "'t'"),
    **dict.fromkeys(("hrv_method", "note", "username"), ("'rmssd'", "''", "'x''y'")),
    **dict.fromkeys(("sleep_hours", "hrv_ms", "steps", "weight_kg", "score", "score_version"),
                    ("0", "1000", "7.5", "-3", "$1")),
}


@st.composite
def comparison(draw: st.DrawFn) -> str:
    column = draw(st.sampled_from(sorted(LITERALS)))
    literal = st.sampled_from(LITERALS[column])
    kind = draw(st.sampled_from(["op", "op", "null", "in"]))
    if kind == "null":
        return f"{column} IS {draw(st.sampled_from(['NULL', 'NOT NULL']))}"
    if kind == "in":
        values = draw(st.lists(literal, min_size=1, max_size=3))
        return f"{column} {draw(st.sampled_from(['IN', 'NOT IN']))} ({', '.join(values)})"
    return f"{column} {draw(st.sampled_from(['=', '<>', '!=', '<', '<=', '>', '>=']))} {draw(literal)}"


WELL_FORMED = st.recursive(
    comparison(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(" ".join),
        inner.map(lambda e: f"NOT ({e})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=6,
)


@settings(max_examples=300, database=None)
@given(where=WELL_FORMED, row=st.fixed_dictionaries(COLUMN_VALUES))
def test_a_well_formed_where_parses_and_answers_a_bool(where: str, row: dict[str, str | None]) -> None:
    predicate = parse_where(where, {"1": "1000", "2": "2026-11-27"})
    assert isinstance(predicate(row), bool)


def test_token_soup_either_is_refused_or_gives_a_predicate_that_answers_a_bool() -> None:
    """Soup, and now and then a well-formed where cut and spliced into it: most are refused; those that
    parse must answer a bool, and some must parse (else this would check nothing)."""
    parsed: list[str] = []

    @settings(max_examples=400, database=None)
    @given(
        words=st.one_of(st.lists(st.sampled_from(TOKENS), max_size=25), WELL_FORMED.map(str.split)),
        row=st.fixed_dictionaries(COLUMN_VALUES),
    )
    def soup(words: list[str], row: dict[str, str | None]) -> None:
        try:
            predicate = parse_where(" ".join(words), {"1": "1000", "2": "2026-11-27"})
        except WhereError:
            return
        assert isinstance(predicate(row), bool)
        parsed.append(" ".join(words))

    soup()
    assert len(parsed) >= 20, parsed


@settings(max_examples=200, database=None)
@given(value=st.integers(min_value=-10**6, max_value=10**6), bound=st.integers(min_value=-10**6, max_value=10**6))
def test_numeric_comparisons_agree_with_integer_arithmetic(value: int, bound: int) -> None:
    row = {**ROW, "steps": str(value)}
    assert holds(f"steps > {bound}", row) is (value > bound)
    assert holds("steps <= $1", row, {"1": str(bound)}) is (value <= bound)
    assert holds(f"steps IN ({bound}, {bound + 1})", row) is (value in (bound, bound + 1))
