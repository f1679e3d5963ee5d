"""The tolerant reply parser: every firmware quirk of the research notes, and garbage."""

from __future__ import annotations

import json

import pytest

from agent.devices.whatsminer.client import error_codes
from agent.devices.whatsminer.parse import ObjectScanner, parse_reply
from agent.errors import ProtocolError

PSU = b'{"STATUS":"S","Code":131,"Msg":{"iin":"8718","vin":"22400","temp0":"33.5"}}'


def test_valid_json_is_read_as_is() -> None:
    assert parse_reply(PSU)["Msg"]["temp0"] == "33.5"


def test_trailing_nul_byte() -> None:
    assert parse_reply(PSU + b"\x00")["Code"] == 131
    assert parse_reply(PSU + b"\x00\n")["Code"] == 131


def test_raw_newlines_between_tokens_and_inside_strings() -> None:
    body = b'{"STATUS":"S",\n"Description":"btminer\nAPI",\n"Code":131}'
    reply = parse_reply(body)
    assert reply["Description"] == "btminer\nAPI"
    assert reply["Code"] == 131


def test_stray_comma_before_closing_brace() -> None:
    body = b'{"STATUS":[{"STATUS":"S","Msg":"Summary",}],"SUMMARY":[{"Power":3593, }],}'
    reply = parse_reply(body)
    assert reply["SUMMARY"][0]["Power"] == 3593
    assert reply["STATUS"][0]["Msg"] == "Summary"


def test_missing_comma_between_two_strings() -> None:
    body = b'{"STATUS":"S","Msg":{"iin":"8718","vin":"22400""temp0":"33.5"}}'
    assert parse_reply(body)["Msg"] == {"iin": "8718", "vin": "22400", "temp0": "33.5"}


def test_body_cut_off_drops_the_last_partial_item() -> None:
    whole = b'{"STATUS":"S","Msg":{"error_code":{"329":"2022-01-17 11:28:11","330":"2022-01-1'
    reply = parse_reply(whole)
    assert reply["Msg"]["error_code"] == {"329": "2022-01-17 11:28:11"}
    assert reply["STATUS"] == "S"


@pytest.mark.parametrize(
    "cut",
    [
        b'{"a":1,"b":12',  # inside a number
        b'{"a":1,"b":"tex',  # inside a string
        b'{"a":1,"b":{"c":2,"d"',  # after a key
        b'{"a":1,"b":[1,2,3',  # inside a list
    ],
)
def test_cut_bodies_keep_what_was_complete(cut: bytes) -> None:
    assert parse_reply(cut)["a"] == 1


def test_list_shaped_like_a_dict_api_2_0_4() -> None:
    body = (
        b'{"STATUS":"S","Code":131,"Msg":{"error_code":["329":"2022-01-17 11:28:11",'
        b'"2010":"2022-01-17 11:29:00"]},"Description":""}'
    )
    msg = parse_reply(body)["Msg"]
    assert error_codes(msg["error_code"]) == {
        "329": "2022-01-17 11:28:11",
        "2010": "2022-01-17 11:29:00",
    }


def test_list_shaped_like_a_dict_and_cut_off() -> None:
    body = b'{"STATUS":"S","Msg":{"error_code":["329":"2022-01-17 11:28:11","330":"2022'
    assert error_codes(parse_reply(body)["Msg"]["error_code"]) == {"329": "2022-01-17 11:28:11"}


def test_error_codes_as_a_list_of_one_key_objects() -> None:
    body = b'{"Msg":{"error_code":[{"329":"2022-01-17 11:28:11"},{"2010":"2022-01-18 00:00:00"}]}}'
    assert error_codes(parse_reply(body)["Msg"]["error_code"]) == {
        "329": "2022-01-17 11:28:11",
        "2010": "2022-01-18 00:00:00",
    }


def test_error_codes_as_a_dict_and_as_bare_codes() -> None:
    assert error_codes({"329": "2022-01-17 11:28:11"}) == {"329": "2022-01-17 11:28:11"}
    assert error_codes(["329", 330]) == {"329": None, "330": None}
    assert error_codes(None) == {}
    assert error_codes("garbage") == {}


def test_all_quirks_at_once() -> None:
    body = (
        b'{"STATUS":"S",\n"Msg":{"name":"P221B","vin":"22400""temp0":"33.5",},'
        b'"Description":"a\nb",}\x00'
    )
    reply = parse_reply(body)
    assert reply["Msg"] == {"name": "P221B", "vin": "22400", "temp0": "33.5"}
    assert reply["Description"] == "a\nb"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00\x00",
        b"garbage",
        b"<html><body>busy</body></html>",
        b"\x15\x03\x01\x00\x02\x02\x0a",
        b"\xff\xfe\xfd",
        b"[1,2,3]",
        b"null",
        b'"text"',
        b'{"a":1}}',
        b'{"a": tru}',
        b'{"a":',
        b"{{{{{{{{",
    ],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_reply(garbage)


def test_a_long_run_of_broken_items_stops_with_a_protocol_error() -> None:
    body = b"{" + b'"a" 1 ' * 200 + b"}"
    with pytest.raises(ProtocolError):
        parse_reply(body)


def test_object_scanner_finds_the_end_of_the_first_object() -> None:
    scanner = ObjectScanner()
    assert scanner.feed(b'{"Msg":"rea') is None
    buffer = b'{"Msg":"rea' + b'dy}","x":{"y":[1]}}\x01\x02\x03'
    end = scanner.feed(buffer)
    assert end is not None
    assert buffer[:end] == b'{"Msg":"ready}","x":{"y":[1]}}'
    assert buffer[end:] == b"\x01\x02\x03"


def test_object_scanner_stops_at_once_on_non_json() -> None:
    assert ObjectScanner().feed(b"  garbage") == 3


def test_object_scanner_handles_escaped_quotes() -> None:
    buffer = b'{"a":"x\\"}"}tail'
    assert ObjectScanner().feed(buffer) == len(buffer) - 4


@pytest.mark.parametrize(
    "body",
    [
        b'{"STATUS":"S","Msg":{"temp":NaN}}',  # what json reads and orjson refuses
        b'{"STATUS":"S","Msg":{"huge":1e400}}',
        b'{"STATUS":"S","Msg":{"a":1,"a":2}}',  # a repeated key: the last one, as json does
    ],
)
def test_the_fast_path_reads_what_json_reads_the_same_way(body: bytes) -> None:
    assert repr(parse_reply(body)) == repr(json.loads(body))
