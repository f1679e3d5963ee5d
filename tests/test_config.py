"""Config loading (agent/config): durations, problems with file and field path, environment
overrides, secrets from files and systemd credentials, the permissions warning, check-config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config.base import parse_duration
from agent.config.settings import ConfigError, LoadedConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TOKEN = "tok-Qx81-never-shown"
PASSWORD = "pw-Lm27-never-shown"
RIG1 = """
[[devices]]
id = "rig1"
kind = "xmrig"
url = "http://127.0.0.1:44444"
"""
RIG2 = RIG1.replace('"rig1"', '"rig2"').replace(":44444", ":44445")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set exactly the overrides they are about."""
    for name in list(os.environ):
        if name.startswith("EDGE_AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def load(tmp_path: Path, text: str, mode: int = 0o600) -> LoadedConfig:
    return load_config(write(tmp_path, text, mode))


# durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("0.25s", 0.25),
        (" 10 s ", 10.0),
        ("7", 7.0),
        (5, 5.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_duration_accepts_units_and_plain_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    ["10x", "fast", "", "ms", "-5s", "5 minutes", "1e3s", -1, True, None, [10], math.nan, math.inf],
)
def test_duration_refuses_what_is_not_one(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_durations_in_the_file_become_seconds(tmp_path: Path) -> None:
    text = RIG1 + 'poll_interval = "500ms"\ntimeout = 3\nstate_refresh = "5m"\n'
    text += '[agent]\ncommand_timeout = "1m"\n'
    settings = load(tmp_path, text).settings
    device = settings.devices[0]
    assert (device.poll_interval, device.timeout, device.state_refresh) == (0.5, 3.0, 300.0)
    assert settings.agent.command_timeout == 60.0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('poll_interval = "50ms"', "poll_interval: must be at least 100ms"),
        ('poll_interval = "soon"', "poll_interval: 'soon' is not a duration"),
        ("poll_interval = nan", "poll_interval: a duration must be a finite number"),
        ("timeout = inf", "timeout: a duration must be a finite number"),
        ("timeout = 0", "timeout: must be positive"),
        ("timeout = -2", "timeout: a duration cannot be negative"),
    ],
)
def test_bad_duration_is_reported_with_file_and_field(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = write(tmp_path, RIG1 + line + "\n")
    [reported] = problems_of(path)
    assert reported.startswith(f"{path}: devices[0] (rig1).{problem}")


# problems: where they are and what they say ------------------------------------------------


def test_unknown_fields_are_named_wherever_they_are(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\nidd = 'x'\n[extra]\nx = 1\n" + RIG1 + "tokne = 'x'\n")
    found = problems_of(path)
    assert sorted(p.split(": unknown field")[0] for p in found) == sorted(
        [f"{path}: agent.idd", f"{path}: extra", f"{path}: devices[0] (rig1).tokne"]
    )


def test_unknown_and_missing_kind(tmp_path: Path) -> None:
    text = '[[devices]]\nid = "a"\nkind = "toaster"\n[[devices]]\nid = "b"\n'
    path = write(tmp_path, text)
    found = problems_of(path)
    assert found[0].startswith(f"{path}: devices[0] (a).kind: 'toaster' is not one of ")
    assert "xmrig" in found[0]
    assert found[1].startswith(f"{path}: devices[1] (b).kind: missing; use one of ")
    assert len(found) == 2


def test_duplicate_ids_name_both_entries(tmp_path: Path) -> None:
    path = write(tmp_path, RIG1 + RIG2 + RIG1)
    assert problems_of(path) == [f"{path}: devices[2] (rig1).id: already used by devices[0]"]


def test_reserved_and_malformed_ids(tmp_path: Path) -> None:
    path = write(tmp_path, RIG1.replace("rig1", "bridge") + RIG2.replace("rig2", "Rig 2"))
    found = problems_of(path)
    assert found[0] == (
        f"{path}: devices[0] (bridge).id: 'bridge' is reserved for the agent's own topics"
    )
    assert found[1].startswith(f"{path}: devices[1] (Rig 2).id: String should match pattern")


def test_allow_commands_must_name_commands_of_the_kind(tmp_path: Path) -> None:
    good = load(tmp_path, RIG1 + 'allow_commands = ["stop", "config_set"]\n')
    assert good.settings.devices[0].allow_commands == ["stop", "config_set"]
    path = write(tmp_path, RIG1 + 'allow_commands = ["stop", "reboot", "factory_reset"]\n')
    assert problems_of(path) == [
        f"{path}: devices[0] (rig1).allow_commands: 'reboot' is not a command XMRig has",
        f"{path}: devices[0] (rig1).allow_commands: 'factory_reset' is not a command XMRig has",
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://broker:1883", "must start with mqtt:// or mqtts://"),
        ("mqtt://", "has no host"),
        ("mqtt://user:pw@broker", "put credentials in username/password, not in the URL"),
        ("mqtt://broker:99999", "has an invalid port"),
        ("mqtt://broker:0", "has an invalid port"),
        ("mqtt://broker:abc", "has an invalid port"),
    ],
)
def test_mqtt_url_problems(tmp_path: Path, url: str, problem: str) -> None:
    path = write(tmp_path, f'[mqtt]\nurl = "{url}"\n')
    [reported] = problems_of(path)
    assert reported.startswith(f"{path}: mqtt.url: {problem}")


def test_mqtt_url_gives_host_port_and_tls(tmp_path: Path) -> None:
    plain = load(tmp_path, '[mqtt]\nurl = "mqtt://broker.lan"\n').settings.mqtt
    assert (plain.host, plain.port, plain.tls) == ("broker.lan", 1883, False)
    tls = load(tmp_path, '[mqtt]\nurl = "mqtts://10.0.0.2"\n').settings.mqtt
    assert (tls.host, tls.port, tls.tls) == ("10.0.0.2", 8883, True)


def test_client_cert_and_key_go_together(tmp_path: Path) -> None:
    cert = write(tmp_path, "cert", name="client.pem")
    key = write(tmp_path, "key", name="client.key")
    together = "mqtt.key_file: cert_file and key_file go together: set both or neither"
    path = write(tmp_path, f'[mqtt]\ncert_file = "{cert}"\n')
    assert problems_of(path) == [f"{path}: {together}"]
    path = write(tmp_path, f'[mqtt]\nkey_file = "{key}"\n')
    assert problems_of(path) == [f"{path}: {together}"]
    both = load(tmp_path, f'[mqtt]\ncert_file = "{cert}"\nkey_file = "{key}"\n')
    assert both.settings.mqtt.cert_file == str(cert)


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nca_file = "/nonexistent/ca.pem"\n')
    assert problems_of(path) == [f"{path}: mqtt.ca_file: /nonexistent/ca.pem does not exist"]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        '[agent]\noffline_after = 0\n[mqtt]\nurl = "ftp://x"\n[power]\nmembers = ["rig1"]\n'
        + RIG1
        + 'poll_interval = "1 fortnight"\n'
        + RIG2
        + 'allow_commands = ["reboot"]\n'
        + RIG2
        + '[[devices]]\nid = "rig3"\nkind = "xmrig"\n'
    )
    path = write(tmp_path, text)
    found = problems_of(path)
    expected_starts = [
        f"{path}: devices[0] (rig1).poll_interval: ",
        f"{path}: devices[1] (rig2).allow_commands: 'reboot'",
        f"{path}: devices[2] (rig2).id: already used by devices[1]",
        f"{path}: devices[3] (rig3).url: Field required",
        f"{path}: agent.offline_after: ",
        f"{path}: mqtt.url: must start with",
    ]
    assert len(found) == len(expected_starts), found
    for start in expected_starts:
        assert any(p.startswith(start) for p in found), (start, found)
    # rig1 is broken, so its power membership is not reported a second time as unknown.
    assert not any("power.members" in p for p in found)


def test_cross_field_problems_come_with_the_field_errors(tmp_path: Path) -> None:
    """Unknown commands, duplicate ids and unknown power members do not wait for the field
    errors to be fixed: one run lists them all."""
    text = (
        '[agent]\noffline_after = 0\n[mqtt]\nurl = "ftp://x"\nca_file = "/nonexistent/ca.pem"\n'
        'reconnect_min = "2m"\nreconnect_max = "1m"\n'
        '[power]\nmembers = ["ghost", "rig2"]\nramp = "slow"\n'
        + RIG1
        + 'poll_interval = "soon"\nallow_commands = ["reboot"]\n'
        + RIG2
        + "nominal_w = 100\n"
        + RIG1.replace("44444", "44446")
    )
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f"{path}: devices[0] (rig1).poll_interval: 'soon' is not a duration; use '500ms', "
        "'10s', '5m', '1h' or seconds",
        f"{path}: devices[0] (rig1).allow_commands: 'reboot' is not a command XMRig has",
        f"{path}: devices[2] (rig1).id: already used by devices[0]",
        f"{path}: agent.offline_after: Input should be greater than or equal to 1",
        f"{path}: mqtt.url: must start with mqtt:// or mqtts://",
        f"{path}: mqtt.ca_file: /nonexistent/ca.pem does not exist",
        f"{path}: mqtt.reconnect_max: 60s is below reconnect_min (120s)",
        f"{path}: power.ramp: Input should be 'fast' or 'normal'",
        f"{path}: power.members: 'ghost' is not a configured device",
    ]


@pytest.mark.parametrize(
    "field", ["mqtt.base_topic", "homeassistant.discovery_prefix", "homeassistant.status_topic"]
)
@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        (
            "edge-agent/",
            "'edge-agent/' ends with '/', which makes an empty topic level "
            "(e.g. 'edge-agent//rig1'); write 'edge-agent'",
        ),
        (
            "/edge-agent",
            "'/edge-agent' starts with '/', which makes an empty topic level "
            "(e.g. '/edge-agent/rig1'); write 'edge-agent'",
        ),
        ("site//agent", "'site//agent' has an empty level ('//'); write 'site/agent'"),
        (
            "site/+/agent",
            "'site/+/agent' contains the wildcard '+': a topic here is plain "
            "levels like 'edge-agent' or 'site-7/edge-agent'",
        ),
        ("site/#", "'site/#' contains the wildcard '#'"),
        ("", "'' has no topic level; use a name like 'edge-agent'"),
        ("/", "'/' has no topic level"),
        ("edge agent", "'edge agent' contains whitespace or a control character"),
    ],
)
def test_topics_with_empty_levels_or_wildcards_are_refused(
    tmp_path: Path, field: str, topic: str, problem: str
) -> None:
    section, name = field.split(".")
    path = write(tmp_path, f"[{section}]\n{name} = {json.dumps(topic)}\n")
    [reported] = problems_of(path)
    assert reported.startswith(f"{path}: {field}: {problem}")


def test_topics_with_several_levels_are_fine(tmp_path: Path) -> None:
    text = '[mqtt]\nbase_topic = "site-7/edge"\n[homeassistant]\ndiscovery_prefix = "ha/x"\n'
    settings = load(tmp_path, text).settings
    assert (settings.mqtt.base_topic, settings.homeassistant.discovery_prefix) == (
        "site-7/edge",
        "ha/x",
    )


@pytest.mark.parametrize(("value", "protocol"), [("5", "5"), ('"5"', "5"), ('"3.1.1"', "3.1.1")])
def test_protocol_as_number_or_text(tmp_path: Path, value: str, protocol: str) -> None:
    assert load(tmp_path, f"[mqtt]\nprotocol = {value}\n").settings.mqtt.protocol == protocol


@pytest.mark.parametrize("value", ["3", '"4"', "true", "5.0", '"v5"'])
def test_protocol_that_is_no_mqtt_version(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[mqtt]\nprotocol = {value}\n")
    [reported] = problems_of(path)
    assert reported.startswith(f"{path}: mqtt.protocol: ")
    assert reported.endswith('is not an MQTT version: use 5 (or "5") or "3.1.1"')


def test_reconnect_min_may_equal_but_not_pass_reconnect_max(tmp_path: Path) -> None:
    equal = load(tmp_path, '[mqtt]\nreconnect_min = "5s"\nreconnect_max = 5\n').settings.mqtt
    assert (equal.reconnect_min, equal.reconnect_max) == (5.0, 5.0)
    path = write(tmp_path, '[mqtt]\nreconnect_min = "90s"\n')
    assert problems_of(path) == [f"{path}: mqtt.reconnect_max: 60s is below reconnect_min (90s)"]


def test_power_member_that_is_not_configured(tmp_path: Path) -> None:
    path = write(tmp_path, RIG1 + 'nominal_w = 100\n[power]\nmembers = ["rig1", "ghost"]\n')
    assert problems_of(path) == [f"{path}: power.members: 'ghost' is not a configured device"]


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    assert problems_of(missing) == [f"{missing}: no such file"]
    broken = write(tmp_path, "[mqtt\nurl = 1\n")
    [problem] = problems_of(broken)
    assert problem.startswith(f"{broken}: not valid TOML: ")
    table = write(tmp_path, '[devices]\nid = "rig1"\n')
    assert problems_of(table) == [f"{table}: devices: must be a list of [[devices]] tables"]


# environment overrides -----------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[agent]\nid = "from-file"\n[mqtt]\nurl = "mqtt://file-broker"\nbase_topic = "farm"\n'
    text += RIG1 + 'token = "file-token"\n'
    monkeypatch.setenv("EDGE_AGENT_MQTT__URL", "mqtts://env-broker:8884")
    monkeypatch.setenv("EDGE_AGENT_AGENT__ID", "from-env")
    monkeypatch.setenv("EDGE_AGENT_DEVICE__RIG1__TOKEN", "env-token")
    monkeypatch.setenv("EDGE_AGENT_DEVICE__RIG1__POLL_INTERVAL", "2s")
    settings = load(tmp_path, text).settings
    assert settings.mqtt.url == "mqtts://env-broker:8884"
    assert settings.mqtt.base_topic == "farm"  # untouched siblings keep the file's value
    assert settings.agent.id == "from-env"
    device = settings.devices[0]
    assert device.secret_values() == ["env-token"]
    assert device.poll_interval == 2.0


def test_device_override_finds_ids_with_dashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_DEVICE__RIG_2__TOKEN", TOKEN)
    settings = load(tmp_path, RIG1.replace("rig1", "rig-2")).settings
    assert settings.devices[0].secret_values() == [TOKEN]


def test_environment_problems_are_listed_with_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_DEVICE__NOSUCH__TOKEN", TOKEN)
    monkeypatch.setenv("EDGE_AGENT_AGENT__OFFLINE_AFTER", "never")
    path = write(tmp_path, RIG1 + "timeout = 0\n")
    found = problems_of(path)
    assert f"{path}: EDGE_AGENT_DEVICE__NOSUCH__TOKEN names no configured device field" in found
    assert any(p.startswith(f"{path}: devices[0] (rig1).timeout: ") for p in found)
    assert any(p.startswith(f"{path}: agent.offline_after: ") for p in found)
    assert len(found) == 3
    assert not any(TOKEN in p for p in found)


def test_unparsable_environment_value_is_a_problem_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_MQTT", "not json")
    [problem] = problems_of(write(tmp_path, RIG1))
    assert problem.startswith("environment: ")
    assert "mqtt" in problem


# secrets ---------------------------------------------------------------------------------


def test_token_from_token_file(tmp_path: Path) -> None:
    secret = write(tmp_path, TOKEN + "\n", name="rig1.token")
    settings = load(tmp_path, RIG1 + f'token_file = "{secret}"\n').settings
    assert settings.devices[0].secret_values() == [TOKEN]


def test_unreadable_token_file_names_its_field(tmp_path: Path) -> None:
    path = write(tmp_path, RIG1 + 'token_file = "/nonexistent/rig1.token"\n')
    assert problems_of(path) == [
        f"{path}: devices[0] (rig1).token_file: cannot read secret file /nonexistent/rig1.token: "
        "No such file or directory"
    ]


def test_secrets_from_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "rig1.token").write_text(TOKEN + "\n")
    (credentials / "mqtt.password").write_text(PASSWORD)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load(tmp_path, '[mqtt]\nusername = "agent"\n' + RIG1 + RIG2).settings
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == PASSWORD
    assert settings.devices[0].secret_values() == [TOKEN]
    assert settings.devices[1].secret_values() == []  # no rig2.token credential
    assert sorted(settings.secret_values()) == sorted([PASSWORD, TOKEN])


def test_file_value_beats_credential_and_environment_beats_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "rig1.token").write_text("from-credentials")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    text = RIG1 + 'token = "from-file"\n'
    assert load(tmp_path, text).settings.devices[0].secret_values() == ["from-file"]
    monkeypatch.setenv("EDGE_AGENT_DEVICE__RIG1__TOKEN", "from-env")
    assert load(tmp_path, text).settings.devices[0].secret_values() == ["from-env"]


def test_secrets_never_printed(tmp_path: Path) -> None:
    text = f'[mqtt]\nusername = "agent"\npassword = "{PASSWORD}"\n' + RIG1 + f'token = "{TOKEN}"\n'
    settings = load(tmp_path, text).settings
    device = settings.devices[0]
    shown = [
        repr(settings),
        str(settings),
        repr(device),
        str(device),
        device.model_dump_json(),
        settings.model_dump_json(),
        str(settings.model_dump()),
    ]
    for text_form in shown:
        assert TOKEN not in text_form
        assert PASSWORD not in text_form


def test_secrets_never_in_problems(tmp_path: Path) -> None:
    text = (
        f'[mqtt]\nurl = "mqtt://agent:{PASSWORD}@broker"\npassword = "{PASSWORD}"\nport = 1\n'
        + RIG1
        + f'token = "{TOKEN}"\npoll_interval = "x"\ntoken_extra = "{TOKEN}"\n'
        + RIG2.replace("http://127.0.0.1:44445", f"http://u:{TOKEN}@127.0.0.1:1")
    )
    found = problems_of(write(tmp_path, text))
    assert len(found) == 5, found
    for problem in found:
        assert TOKEN not in problem
        assert PASSWORD not in problem


# the permissions warning ---------------------------------------------------------------


def test_world_readable_file_with_secrets_warns(tmp_path: Path) -> None:
    loaded = load(tmp_path, RIG1 + f'token = "{TOKEN}"\n', mode=0o644)
    [warning] = loaded.warnings
    assert str(loaded.path) in warning
    assert "readable by other users" in warning
    assert "chmod 600" in warning
    assert TOKEN not in warning


def test_world_readable_mqtt_password_warns(tmp_path: Path) -> None:
    loaded = load(tmp_path, f'[mqtt]\nusername = "a"\npassword = "{PASSWORD}"\n', mode=0o644)
    assert len(loaded.warnings) == 1


def test_private_file_with_secrets_does_not_warn(tmp_path: Path) -> None:
    assert load(tmp_path, RIG1 + f'token = "{TOKEN}"\n', mode=0o600).warnings == []


def test_world_readable_file_without_secrets_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = write(tmp_path, TOKEN, name="rig1.token")
    monkeypatch.setenv("EDGE_AGENT_DEVICE__RIG2__TOKEN", TOKEN)
    loaded = load(tmp_path, RIG1 + f'token_file = "{secret}"\n' + RIG2, mode=0o644)
    assert loaded.settings.secret_values() == [TOKEN, TOKEN]  # secrets, but not in the file
    assert loaded.warnings == []


# edge-agent check-config ---------------------------------------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "-c", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def test_check_config_good_file(tmp_path: Path) -> None:
    text = '[agent]\nid = "edge-01"\n' + RIG1 + f'token = "{TOKEN}"\n' + RIG2
    path = write(tmp_path, text, mode=0o644)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        f"{path}: ok — agent edge-01, 2 devices (2 xmrig), broker mqtt://127.0.0.1:1883"
    ]
    assert result.stderr.startswith(f"warning: {path} holds secrets and is readable")
    assert TOKEN not in result.stdout + result.stderr


def test_check_config_bad_file(tmp_path: Path) -> None:
    text = '[mqtt]\nurl = "mqtt://broker:70000"\n' + RIG1 + f'token = "{TOKEN}"\ntimeout = 0\n'
    text += RIG1
    path = write(tmp_path, text)
    result = check_config(path)
    assert result.returncode == 78
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"config error: {path}: devices[0] (rig1).timeout: must be positive",
        f"config error: {path}: devices[1] (rig1).id: already used by devices[0]",
        f"config error: {path}: mqtt.url: has an invalid port (a number from 1 to 65535)",
    ]
    assert TOKEN not in result.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.toml")
    assert result.returncode == 78
    assert result.stderr.strip() == f"config error: {tmp_path / 'nope.toml'}: no such file"
