"""Client `where` clauses: parsed into a filter over an allow-list of columns, never into SQL.

Grammar (a small subset of SQL that Electric clients send):

    expr    := or
    or      := and ("OR" and)*
    and     := not ("AND" not)*
    not     := "NOT" not | primary
    primary := "(" expr ")" | column cmp value | column "IS" ["NOT"] "NULL"
             | column ["NOT"] "IN" "(" value ("," value)* ")"
    cmp     := "=" | "<>" | "!=" | "<" | "<=" | ">" | ">="
    value   := 'string' | number | TRUE | FALSE | $n   (a positional parameter: params[n])

Values are compared as the column's type (dates as dates, numbers as exact decimals). The parsed
filter is a Python predicate over a row of text values; anything else is a 400.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

Row = Mapping[str, str | None]
Predicate = Callable[[Row], bool]
# SQL's three-valued logic inside the parser: None is "unknown" (a comparison with NULL).
Tri = Callable[[Row], bool | None]

# The columns a client may filter on, and how to read their text values.
COLUMN_TYPES: dict[str, Callable[[str], Any]] = {
    "date": dt.date.fromisoformat,
    "sleep_hours": Decimal,
    "hrv_ms": Decimal,
    "hrv_method": str,
    "steps": Decimal,
    "weight_kg": Decimal,
    "note": str,
    "score": Decimal,
    "score_version": Decimal,
    "deleted": lambda text: _pg_bool(text),
    "username": str,
}

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<param>\$\d+)"
    r"|(?P<op><=|>=|<>|!=|=|<|>|\(|\)|,)|(?P<word>\"[a-z_]+\"|[A-Za-z_][A-Za-z_0-9]*))"
)


class WhereError(ValueError):
    pass


def parse_where(text: str, params: Mapping[str, str]) -> Predicate:
    tokens = _tokenize(text)
    parser = _Parser(tokens, params)
    tri = parser.expr()
    if parser.pos != len(tokens):
        raise WhereError(f"unexpected {tokens[parser.pos][1]!r}")
    return lambda row: tri(row) is True  # as in SQL, a row is kept only when the filter is true


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise WhereError(f"cannot read {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    if len(tokens) > 200:
        raise WhereError("too long")
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], params: Mapping[str, str]) -> None:
        self.tokens = tokens
        self.params = params
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].upper() in words:
            self.pos += 1
            return True
        return False

    def take(self, value: str) -> None:
        token = self.peek()
        if token is None or token[1] != value:
            raise WhereError(f"expected {value!r}")
        self.pos += 1

    def expr(self) -> Tri:
        parts = [self.conjunction()]
        while self.keyword("OR"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda row: _or([p(row) for p in parts]))

    def conjunction(self) -> Tri:
        parts = [self.negation()]
        while self.keyword("AND"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda row: _and([p(row) for p in parts]))

    def negation(self) -> Tri:
        if self.keyword("NOT"):
            inner = self.negation()
            return lambda row: None if (value := inner(row)) is None else not value
        return self.primary()

    def primary(self) -> Tri:
        token = self.peek()
        if token is None:
            raise WhereError("unexpected end")
        if token[1] == "(":
            self.pos += 1
            inner = self.expr()
            self.take(")")
            return inner
        column = self.column()
        read = COLUMN_TYPES[column]
        if self.keyword("IS"):
            negate = self.keyword("NOT")
            if not self.keyword("NULL"):
                raise WhereError("expected NULL")
            return lambda row: (row.get(column) is None) != negate
        negate = self.keyword("NOT")
        if self.keyword("IN"):
            self.take("(")
            values = [self.value(read)]
            while self.peek() and self.peek() == ("op", ","):
                self.pos += 1
                values.append(self.value(read))
            self.take(")")
            def member(row: Row) -> bool | None:
                cell = _cell(row, column, read)
                return None if cell is None else (cell in values) != negate

            return member
        if negate:
            raise WhereError("expected IN after NOT")
        token = self.peek()
        if token is None or token[0] != "op" or token[1] in ("(", ")", ","):
            raise WhereError("expected a comparison")
        self.pos += 1
        compare = _COMPARE[token[1]]
        value = self.value(read)

        def test(row: Row) -> bool | None:
            cell = _cell(row, column, read)
            return None if cell is None else bool(compare(cell, value))

        return test

    def column(self) -> str:
        token = self.peek()
        if token is None or token[0] != "word":
            raise WhereError("expected a column")
        name = token[1].strip('"')
        if name not in COLUMN_TYPES:
            raise WhereError(f"column {name!r} cannot be filtered (allowed {', '.join(COLUMN_TYPES)})")
        self.pos += 1
        return name

    def value(self, read: Callable[[str], Any]) -> Any:
        token = self.peek()
        if token is None:
            raise WhereError("expected a value")
        self.pos += 1
        kind, text = token
        if kind == "param":
            key = text[1:]
            if key not in self.params:
                raise WhereError(f"missing params[{key}]")
            text = self.params[key]
        elif kind == "string":
            text = text[1:-1].replace("''", "'")
        elif kind == "word" and text.upper() in ("TRUE", "FALSE"):
            text = "t" if text.upper() == "TRUE" else "f"
        elif kind != "number":
            raise WhereError(f"expected a value, got {text!r}")
        try:
            value = read(text)
        except (ValueError, InvalidOperation):
            raise WhereError(f"{text!r} is not a valid value for this column") from None
        if isinstance(value, Decimal) and not value.is_finite():
            raise WhereError(f"{text!r} is not a finite number")
        return value


def _and(values: list[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _or(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def _pg_bool(text: str) -> bool:
    """Postgres's boolean input: t/true/y/yes/on/1 and f/false/n/no/off/0, any case."""
    word = text.strip().lower()
    if word in ("t", "true", "y", "yes", "on", "1"):
        return True
    if word in ("f", "false", "n", "no", "off", "0"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _cell(row: Row, column: str, read: Callable[[str], Any]) -> Any:
    text = row.get(column)
    return None if text is None else read(text)


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
