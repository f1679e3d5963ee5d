"""The coercion rules the drivers share: what each one accepts, and that the rest is None (or,
for the strict ones, a protocol error that names the field)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from agent.devices import coerce
from agent.errors import ProtocolError


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (2.5, 2.5), (True, None), ("3", None), (math.nan, None), (math.inf, None)],
)
def test_number_is_a_finite_json_number(value: Any, expected: Any) -> None:
    assert coerce.number(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (" 2.5 ", 2.5), ("x", None), ("nan", None), (math.nan, None), (False, None)],
)
def test_number_or_text_reads_numeric_text_too(value: Any, expected: Any) -> None:
    assert coerce.number_or_text(value) == expected


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (coerce.integer, 7, 7),
        (coerce.integer, 7.0, None),
        (coerce.integer, True, None),
        (coerce.truncated, 7.9, 7),
        (coerce.truncated, "12", 12),
        (coerce.truncated, "-12", None),
        (coerce.truncated_or_text, "-12.7", -12),
        (coerce.truncated_or_text, "x", None),
    ],
)
def test_the_integer_rules(rule: Any, value: Any, expected: Any) -> None:
    assert rule(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (0, False), (2.5, True), (" Yes ", True), ("N", False), ("maybe", None)],
)
def test_flag_or_word(value: Any, expected: Any) -> None:
    assert coerce.flag_or_word(value) is expected


def test_flag_is_json_true_or_false_only() -> None:
    assert [coerce.flag(v) for v in (True, False, 1, "true")] == [True, False, None, None]


def test_text_rules() -> None:
    assert [coerce.text(v) for v in (5, " a ", None, {}, [])] == ["5", " a ", None, None, None]
    assert [coerce.stripped_text(v) for v in (" a ", "  ", 0, [1])] == ["a", None, "0", None]


def test_containers_default_to_empty() -> None:
    assert coerce.mapping({"a": 1}) == {"a": 1}
    assert coerce.mapping([1]) == {}
    assert coerce.items([1]) == [1]
    assert coerce.items({"a": 1}) == []


def test_strict_rules_pass_none_and_the_right_type() -> None:
    assert coerce.strict_number(None, "f") is None
    assert coerce.strict_integer(4.0, "f") == 4
    assert coerce.strict_text("x", "f") == "x"
    assert coerce.strict_flag(False, "f") is False


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        (coerce.strict_number, "5", "user: shares is '5', not a number"),
        (coerce.strict_number, True, "user: shares is True, not a number"),
        (coerce.strict_integer, 4.5, "user: shares is 4.5, not a whole number"),
        (coerce.strict_text, 5, "user: shares is 5, not text"),
        (coerce.strict_flag, "yes", "user: shares is 'yes', not true/false"),
        (coerce.strict_number, "x" * 50, "user: shares is '" + "x" * 36 + "..., not a number"),
    ],
)
def test_strict_rules_raise_a_protocol_error_naming_the_field(
    rule: Any, value: Any, message: str
) -> None:
    with pytest.raises(ProtocolError) as raised:
        rule(value, "user: shares")
    assert raised.value.message == message


def test_equal_text_from_separate_replies_is_one_object() -> None:
    """The states kept hold each reply's text: equal text is shared, not copied per poll."""
    first, second = json.loads('["Alive", " M30S+ "]'), json.loads('["Alive", " M30S+ "]')
    assert first[0] is not second[0]
    assert coerce.stripped_text(first[0]) is coerce.stripped_text(second[0])
    assert coerce.stripped_text(first[1]) is coerce.stripped_text(second[1]) == "M30S+"
    assert coerce.shared(first[0]) is coerce.shared(second[0])
    assert coerce.shared(7) == 7 and coerce.shared(None) is None
