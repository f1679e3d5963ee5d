"""Command classes without MQTT: per-call classification of config patches, the refusal's
config line, masking of secrets inside JSON params, and the README's class column."""

from __future__ import annotations

import pytest

from agent.catalog.docs import kind_tables
from agent.catalog.validate import (
    authorize,
    classify,
    mask_keys,
    redact_params,
    resolve_command,
    sensitive_paths,
)
from agent.devices.xmrig.catalog import CONFIG_PATCH_FIELDS
from agent.errors import NotAllowedError, ValidationError
from agent.kinds import KINDS

XMRIG = KINDS["xmrig"].catalog
WHATSMINER = KINDS["whatsminer"].catalog
PATCH = XMRIG.command("config_patch")
assert PATCH is not None


@pytest.mark.parametrize(
    ("patch", "touched"),
    [
        ({"cpu": {"priority": 3, "rx": [0, 1]}}, []),
        ({"randomx": {"mode": "fast"}, "print-time": 10, "verbose": 2}, []),
        ({"opencl": {"enabled": True}, "cuda": {"enabled": False}}, []),
        ({}, []),
        ({"pools": [{"url": "evil:3333"}]}, ["pools"]),
        ({"pools": None}, ["pools"]),  # deleting the pools is a change of pools
        ({"donate-level": 5, "cpu": {"yield": False}}, ["donate-level"]),
        ({"http": {"access-token": "t", "port": 1}}, ["http.access-token", "http.port"]),
        ({"api": {"worker-id": "x"}}, ["api.worker-id"]),
        ({"log-file": "/tmp/x", "syslog": True}, ["log-file", "syslog"]),
        ({"opencl": {"loader": "/tmp/evil.so"}}, ["opencl.loader"]),
        ({"cuda": {"nvml": "/tmp/nvml.so"}}, ["cuda.nvml"]),
        ({"cuda": None}, ["cuda"]),  # replacing the whole section replaces its loader too
        ({"cuda": {}}, ["cuda"]),
        ({"some-new-key": 1}, ["some-new-key"]),  # default deny
    ],
)
def test_config_patch_is_sensitive_exactly_when_it_touches_a_sensitive_field(
    patch: dict[str, object], touched: list[str]
) -> None:
    assert sensitive_paths(CONFIG_PATCH_FIELDS, patch) == touched
    found = classify(PATCH, {"patch": patch})
    assert found.security == ("sensitive" if touched else "routine")
    if touched:
        assert found.reason == f"the patch touches {', '.join(touched)}"


def test_a_patch_that_is_not_an_object_cannot_be_classified() -> None:
    with pytest.raises(ValidationError, match="patch must be a JSON object"):
        classify(PATCH, {"patch": [1, 2]})


def test_a_sensitive_patch_needs_config_patch_in_allow_commands() -> None:
    params = {"patch": {"pools": [{"user": "wallet"}]}}
    with pytest.raises(NotAllowedError) as caught:
        authorize(PATCH, params, ["stop"], "rig7")
    assert caught.value.message == (
        "config_patch is sensitive (the patch touches pools) and device 'rig7' does not allow "
        'it; to allow it, set allow_commands = ["stop", "config_patch"] in its [[devices]] entry'
    )
    assert caught.value.data == {
        "security": "sensitive",
        "allow": 'allow_commands = ["stop", "config_patch"]',
    }
    assert authorize(PATCH, params, ["config_patch"], "rig7").security == "sensitive"
    assert authorize(PATCH, {"patch": {"cpu": {}}}, [], "rig7").security == "routine"


@pytest.mark.parametrize(
    "name",
    ["update_pools", "enable_web_pools", "update_pwd", "net_config", "set_hostname", "load_log"],
)
def test_whatsminer_sensitive_commands_are_refused_before_their_params_are_read(
    name: str,
) -> None:
    with pytest.raises(NotAllowedError) as caught:
        resolve_command(WHATSMINER, name, [], device="wm1")
    assert f"{name} is sensitive (" in caught.value.message
    assert f'set allow_commands = ["{name}"]' in caught.value.message
    assert resolve_command(WHATSMINER, name, [name]).name == name


def test_secrets_inside_json_params_are_masked_at_any_depth() -> None:
    config = {
        "http": {"access-token": "tok-123", "port": 1},
        "pools": [{"url": "u", "user": "wallet", "pass": "pw-456"}, {"pass": ""}],
    }
    config_set = XMRIG.command("config_set")
    assert config_set is not None
    shown = redact_params(config_set, {"config": config})["config"]
    assert shown["http"] == {"access-token": "***", "port": 1}
    assert shown["pools"] == [{"url": "u", "user": "wallet", "pass": "***"}, {"pass": ""}]
    assert config["http"]["access-token"] == "tok-123"  # the params themselves are untouched
    assert mask_keys([{"a": {"k": 1}}], {"k"}) == [{"a": {"k": "***"}}]


def test_readme_tables_show_each_commands_class() -> None:
    xmrig = kind_tables(XMRIG)
    assert "| command | parameters | plain payload | class | what it does |" in xmrig
    assert "| **sensitive** | Replace the whole config" in xmrig
    assert "| routine / **sensitive**¹ | Change part of the config" in xmrig
    assert "¹ `config_patch`: sensitive when the patch touches anything but cpu" in xmrig
    assert "| **disruptive** | Restart the control board" in kind_tables(WHATSMINER)
