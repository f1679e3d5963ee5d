"""Command payloads → validated params (agent/catalog/validate.py), with the XMRig catalog and
small hand-made command specs."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from agent.catalog.model import Catalog, CommandSpec, Param
from agent.catalog.validate import (
    MAX_PAYLOAD_BYTES,
    parse_command_payload,
    parse_set_payload,
    redact_params,
    resolve_command,
    validate_params,
)
from agent.devices.xmrig.catalog import CATALOG as XMRIG
from agent.errors import (
    ErrorCode,
    NotAllowedError,
    UnknownCommandError,
    ValidationError,
)
from agent.runtime.commands import payload_transaction

LEVEL = CommandSpec(
    "set_level",
    "a percentage",
    params=(Param("level", "int", "percent", minimum=0, maximum=100),),
    plain="level",
)
TUNE = CommandSpec(
    "tune",
    "one of each kind of parameter",
    params=(
        Param("gain", "float", "gain", minimum=-1.5, maximum=2.5),
        Param(
            "mode",
            "str",
            "mode",
            choices=("low", "normal", "high"),
            required=False,
            default="normal",
        ),
        Param("label", "str", "label", max_length=8, pattern=r"[a-z0-9-]+", required=False),
        Param("enabled", "bool", "on/off", required=False),
        Param("extra", "json", "anything", required=False),
    ),
)
PIN = "4711"
SECRETS = CommandSpec(
    "unlock",
    "secret parameters of every type",
    params=(
        Param("pin", "str", "pin", secret=True, pattern=r"\d{4}", required=False),
        Param("code", "int", "code", secret=True, minimum=0, maximum=9999, required=False),
        Param("word", "str", "word", secret=True, choices=("alpha", "beta"), required=False),
        Param("armed", "bool", "armed", secret=True, required=False),
        Param("user", "str", "user", required=False),
    ),
)
UPLOAD = CommandSpec("firmware_upgrade", "binary flow", cli_only=True, security="disruptive")
HAND_MADE = Catalog(
    kind="test",
    title="Test device",
    manufacturer="nobody",
    default_model="test",
    fields=(),
    entities=(),
    commands=(LEVEL, TUNE, SECRETS, UPLOAD),
)


def refused(call: Any, *args: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        call(*args)
    assert caught.value.code == ErrorCode.VALIDATION
    return caught.value


def tune(**raw: Any) -> dict[str, Any]:
    return validate_params(TUNE, {"gain": 1, **raw})


# {device}/set ----------------------------------------------------------------------------


def test_set_payload_splits_command_params_and_transaction() -> None:
    request = parse_set_payload(b'{"command": "tune", "gain": 2, "transaction": "t-9"}')
    assert request.name == "tune"
    assert request.params == {"gain": 2}
    assert request.transaction == "t-9"


def test_set_payload_without_transaction() -> None:
    request = parse_set_payload(b'{"command": "pause"}')
    assert (request.name, request.params, request.transaction) == ("pause", {}, None)


@pytest.mark.parametrize("payload", [b"{", b'{"command": pause}', b"ON", b"", b"{'a': 1}"])
def test_set_payload_malformed_json(payload: bytes) -> None:
    assert "not valid JSON" in refused(parse_set_payload, payload).message


@pytest.mark.parametrize("payload", [b"[]", b'"pause"', b"42", b"null", b"true"])
def test_set_payload_must_be_an_object(payload: bytes) -> None:
    assert "JSON object" in refused(parse_set_payload, payload).message


@pytest.mark.parametrize(
    "body",
    [
        {"transaction": "t-1"},
        {"command": 5, "transaction": "t-1"},
        {"command": "", "transaction": "t-1"},
    ],
)
def test_set_payload_without_command_keeps_the_transaction(body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    error = refused(parse_set_payload, payload)
    assert '"command" is missing' in error.message
    assert error.data is None  # the transaction rides in the command service's call instead
    assert payload_transaction(payload) == "t-1"


# {device}/set/{command} ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "state"),
    [
        (b"ON", True),
        (b"OFF", False),
        (b" on\n", True),
        (b"off", False),
        (b"true", True),
        (b"0", False),
    ],
)
def test_plain_switch_payloads(payload: bytes, state: bool) -> None:
    spec = resolve_command(XMRIG, "mining", [])
    request = parse_command_payload(spec, payload)
    assert request.name == "mining"
    assert validate_params(spec, request.params) == {"state": state}


def test_plain_number_payload() -> None:
    request = parse_command_payload(LEVEL, b"75")
    assert request.params == {"level": "75"}
    assert validate_params(LEVEL, request.params) == {"level": 75}


def test_json_params_on_a_command_topic() -> None:
    request = parse_command_payload(LEVEL, b'  {"level": 20, "transaction": 7}  ')
    assert (request.params, request.transaction) == ({"level": 20}, 7)
    assert validate_params(LEVEL, request.params) == {"level": 20}


def test_command_without_params_takes_any_payload_as_a_press() -> None:
    pause = resolve_command(XMRIG, "pause", [])
    for payload in (b"", b"PRESS", b"1"):
        request = parse_command_payload(pause, payload)
        assert (request.name, request.params) == ("pause", {})
        assert validate_params(pause, request.params) == {}


def test_json_params_for_a_command_without_params_are_refused() -> None:
    pause = resolve_command(XMRIG, "pause", [])
    request = parse_command_payload(pause, b'{"force": true}')
    assert (
        "unknown parameter(s) force; accepted: none"
        in refused(validate_params, pause, request.params).message
    )


def test_plain_command_needs_a_value() -> None:
    assert "needs a value for 'level'" in refused(parse_command_payload, LEVEL, b"  ").message


def test_command_topic_malformed_json() -> None:
    assert "not valid JSON" in refused(parse_command_payload, LEVEL, b'{"level": }').message


# sizes and encodings ---------------------------------------------------------------------

BIG = b'{"command": "tune", "gain": 1, "extra": "' + b"x" * 1_000_000 + b'"}'


def parse_on_command_topic(payload: bytes) -> Any:
    return parse_command_payload(TUNE, payload)


@pytest.mark.parametrize("parse", [parse_set_payload, parse_on_command_topic])
@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (BIG, f"limited to {MAX_PAYLOAD_BYTES}"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"command": "tune", "label": "\xc3"}', "not UTF-8"),
        (b'{"a":' * 12_000, "nested too deeply"),  # < 64 KB, but deeper than the decoder goes
        (b'{"a":' + b"[" * 60_000, "nested too deeply"),
    ],
    ids=["1MB", "bad-start-byte", "cut-utf8", "deep-objects", "deep-arrays"],
)
def test_oversized_undecodable_and_deep_payloads(parse: Any, payload: bytes, words: str) -> None:
    assert words in refused(parse, payload).message


def test_payload_at_the_limit_is_read() -> None:
    head = b'{"command": "tune", "gain": 1, "extra": "'
    payload = head + b"x" * (MAX_PAYLOAD_BYTES - len(head) - 2) + b'"}'
    assert len(payload) == MAX_PAYLOAD_BYTES
    assert parse_set_payload(payload).params["gain"] == 1


# params ----------------------------------------------------------------------------------


def test_unknown_params_are_named_with_the_accepted_ones() -> None:
    error = refused(validate_params, LEVEL, {"level": 5, "lvl": 5, "force": 1})
    assert error.message == "set_level: unknown parameter(s) force, lvl; accepted: level"


def test_required_param() -> None:
    assert refused(validate_params, LEVEL, {}).message == (
        "set_level: parameter 'level' is required"
    )
    assert "'level' is required" in refused(validate_params, LEVEL, {"level": None}).message


def test_defaults_fill_optional_params() -> None:
    assert tune() == {"gain": 1.0, "mode": "normal"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [(42, 42), ("42", 42), (" 42 ", 42), (42.0, 42), ("1e2", 100), (0, 0), ("-0", 0)],
)
def test_int_coercion(given: Any, expected: int) -> None:
    level = validate_params(LEVEL, {"level": given})["level"]
    assert level == expected
    assert type(level) is int


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (4.5, "whole number"),
        ("4.5", "whole number"),
        (True, "got a boolean"),
        ("abc", "must be a number, got 'abc'"),
        ("", "must be a number"),
        ([5], "must be a number, got list"),
        ({"v": 5}, "must be a number, got dict"),
    ],
)
def test_int_refusals(given: Any, words: str) -> None:
    assert words in refused(validate_params, LEVEL, {"level": given}).message


@pytest.mark.parametrize(("given", "expected"), [(2, 2.0), ("1.25", 1.25), (-1.5, -1.5)])
def test_float_coercion(given: Any, expected: float) -> None:
    gain = tune(gain=given)["gain"]
    assert gain == expected
    assert type(gain) is float


@pytest.mark.parametrize(
    "given",
    [math.nan, math.inf, -math.inf, "nan", "inf", "-Infinity", json.loads("NaN"), "1e400"],
)
def test_non_finite_numbers_are_refused(given: Any) -> None:
    assert "must be a finite number" in refused(validate_params, TUNE, {"gain": given}).message
    assert "must be a finite number" in refused(validate_params, LEVEL, {"level": given}).message


def test_huge_json_integers_are_refused_cleanly() -> None:
    huge = json.loads("1" + "0" * 400)
    message = refused(validate_params, LEVEL, {"level": huge}).message
    assert message.startswith("set_level.level must be at most 100, got ")
    assert len(message) < 120  # the value is shortened, not echoed in full
    assert "too large" in refused(validate_params, TUNE, {"gain": huge}).message


@pytest.mark.parametrize("word", ["on", "ON", "true", "1", "yes", "enable", "enabled", True, 1])
def test_bool_true_words(word: Any) -> None:
    assert tune(enabled=word)["enabled"] is True


@pytest.mark.parametrize(
    "word", ["off", "Off", "false", "0", "no", "disable", "disabled", False, 0]
)
def test_bool_false_words(word: Any) -> None:
    assert tune(enabled=word)["enabled"] is False


@pytest.mark.parametrize("word", ["maybe", "", 2, 1.0, "onn"])
def test_bool_refusals(word: Any) -> None:
    assert (
        "must be ON/OFF or true/false"
        in refused(validate_params, TUNE, {"gain": 1, "enabled": word}).message
    )


def test_str_coercion() -> None:
    assert tune(label=5)["label"] == "5"
    assert (
        "must be text, got bool"
        in refused(validate_params, TUNE, {"gain": 1, "label": True}).message
    )
    assert (
        "must be text, got dict" in refused(validate_params, TUNE, {"gain": 1, "mode": {}}).message
    )


def test_json_params_pass_through() -> None:
    value = {"pools": [{"url": "a:1"}], "n": None}
    assert tune(extra=value)["extra"] == value


@pytest.mark.parametrize("level", [0, 100, "0", "100", 50])
def test_int_range_is_inclusive(level: Any) -> None:
    assert validate_params(LEVEL, {"level": level})["level"] == int(level)


@pytest.mark.parametrize(
    ("level", "message"),
    [
        (-1, "set_level.level must be at least 0, got -1"),
        (101, "set_level.level must be at most 100, got 101"),
        (1000, "set_level.level must be at most 100, got 1000"),
    ],
)
def test_int_range_ends(level: int, message: str) -> None:
    assert refused(validate_params, LEVEL, {"level": level}).message == message


@pytest.mark.parametrize("gain", [-1.5, 2.5, "-1.5", "2.5"])
def test_float_range_is_inclusive(gain: Any) -> None:
    assert tune(gain=gain)["gain"] == float(gain)


@pytest.mark.parametrize(("gain", "words"), [(-1.5001, "at least -1.5"), (2.5001, "at most 2.5")])
def test_float_range_ends(gain: float, words: str) -> None:
    assert words in refused(validate_params, TUNE, {"gain": gain}).message


def test_choices() -> None:
    assert tune(mode="high")["mode"] == "high"
    error = refused(validate_params, TUNE, {"gain": 1, "mode": "turbo"})
    assert error.message == "tune.mode must be one of low, normal, high, got 'turbo'"
    assert "must be one of" in refused(validate_params, TUNE, {"gain": 1, "mode": "HIGH"}).message


@pytest.mark.parametrize("label", ["rig-1", "a", "12345678"])
def test_pattern_and_length_accepted(label: str) -> None:
    assert tune(label=label)["label"] == label


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ("Rig_1", "does not match"),
        ("rig-1!", "does not match"),  # the whole value must match, not a prefix
        (" rig", "does not match"),
        ("123456789", "at most 8 characters"),
    ],
)
def test_pattern_and_length_refused(label: str, words: str) -> None:
    assert words in refused(validate_params, TUNE, {"gain": 1, "label": label}).message


# secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"pin": "hunter2"},
        {"pin": "47110"},
        {"code": "hunter2"},
        {"code": 123456},
        {"code": 12.5},
        {"word": "hunter2"},
        {"armed": "hunter2"},
    ],
)
def test_secret_values_are_never_echoed(raw: dict[str, Any]) -> None:
    secret = str(next(iter(raw.values())))
    error = refused(validate_params, SECRETS, raw)
    assert secret not in error.message
    assert secret not in json.dumps(error.as_dict())
    assert "the value given" in error.message


def test_plain_values_are_echoed_for_the_operator() -> None:
    assert "'hunter2'" in refused(validate_params, LEVEL, {"level": "hunter2"}).message


def test_redact_params_hides_only_secrets() -> None:
    params = validate_params(SECRETS, {"pin": PIN, "code": 12, "user": "ops"})
    assert params["pin"] == PIN
    assert redact_params(SECRETS, params) == {"pin": "***", "code": "***", "user": "ops"}
    assert redact_params(LEVEL, {"level": 5}) == {"level": 5}


# resolving the command -------------------------------------------------------------------


def test_unknown_command_lists_the_known_ones() -> None:
    with pytest.raises(UnknownCommandError) as caught:
        resolve_command(XMRIG, "reboot", [])
    assert caught.value.code == ErrorCode.UNKNOWN_COMMAND
    message = caught.value.message
    assert message.startswith("unknown command 'reboot' for XMRig; known: ")
    for name in ("pause", "resume", "mining", "stop", "start", "config_get", "config_patch"):
        assert name in message


def test_missing_command_name_is_unknown() -> None:
    with pytest.raises(UnknownCommandError):
        resolve_command(XMRIG, None, [])


def test_cli_only_commands_are_not_offered_over_mqtt() -> None:
    with pytest.raises(UnknownCommandError) as caught:
        resolve_command(HAND_MADE, "nope", [])
    assert "firmware_upgrade" not in caught.value.message
    assert "set_level" in caught.value.message


@pytest.mark.parametrize(
    ("name", "security"), [("stop", "disruptive"), ("config_set", "sensitive")]
)
def test_gated_commands_need_allow_commands(name: str, security: str) -> None:
    with pytest.raises(NotAllowedError) as caught:
        resolve_command(XMRIG, name, ["pause"], device="rig1")
    assert caught.value.code == ErrorCode.NOT_ALLOWED
    assert caught.value.message.startswith(f"{name} is {security}")
    assert f'set allow_commands = ["pause", "{name}"]' in caught.value.message
    assert resolve_command(XMRIG, name, [name]).name == name


def test_ordinary_commands_need_no_allowance() -> None:
    for name in ("pause", "resume", "mining", "start", "config_get", "config_patch"):
        assert resolve_command(XMRIG, name, []).name == name


def test_cli_only_is_refused_over_mqtt_even_when_allowed() -> None:
    with pytest.raises(NotAllowedError) as caught:
        resolve_command(HAND_MADE, "firmware_upgrade", ["firmware_upgrade"])
    assert "only from the CLI" in caught.value.message
    spec = resolve_command(HAND_MADE, "firmware_upgrade", ["firmware_upgrade"], via_mqtt=False)
    assert spec is UPLOAD
    with pytest.raises(NotAllowedError):  # the CLI still honours allow_commands
        resolve_command(HAND_MADE, "firmware_upgrade", [], via_mqtt=False)


def test_xmrig_config_commands_take_json_objects() -> None:
    patch = resolve_command(XMRIG, "config_patch", [])
    request = parse_set_payload(b'{"command": "config_patch", "patch": {"donate-level": 1}}')
    assert validate_params(patch, request.params) == {"patch": {"donate-level": 1}}
    config_set = resolve_command(XMRIG, "config_set", ["config_set"])
    assert "'config' is required" in refused(validate_params, config_set, {}).message
