"""Fleet shorthand in the config (agent/config/fleet.py): `[defaults.<kind>]`, `[[groups]]` that
expand address ranges into devices with an id template, the precedence of device over group over
kind defaults, overlaps and duplicate ids, power members by pattern, and reload with groups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.base import DeviceConfig
from agent.config.settings import ConfigError, LoadedConfig, load_config
from agent.kinds import KINDS
from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import REPO, AgentThread, Mosquitto, Probe, make_settings
from tests.test_config import check_config, clean_environment, write

PASSWORD = "wm-pass-Zr81-never-shown"
pytestmark = pytest.mark.usefixtures(clean_environment.__name__)  # no EDGE_AGENT_… leaks in


def load(tmp_path: Path, text: str) -> LoadedConfig:
    return load_config(write(tmp_path, text), environ={}, kinds=KINDS)


def problems(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, kinds=KINDS)
    return path, caught.value.problems


def field(device: DeviceConfig, name: str) -> Any:
    """A kind's own field (host, port, url), as its JSON form."""
    return device.model_dump(mode="json")[name]


def whatsminers(hosts: str, template: str = "wm-{ip}", extra: str = "") -> str:
    return f'[[groups]]\nkind = "whatsminer"\nhosts = {hosts}\nid = "{template}"\n{extra}'


# expansion and precedence ------------------------------------------------------------------


def test_defaults_group_and_device_entry_in_order_of_precedence(tmp_path: Path) -> None:
    secret = write(tmp_path, PASSWORD + "\n", name="wm.password")
    text = (
        f'[defaults.whatsminer]\npassword_file = "{secret}"\npoll_interval = "20s"\n'
        'allow_commands = ["reboot"]\ntimeout = "3s"\n'
        + whatsminers('"10.0.1.10-10.0.1.12"', extra='poll_interval = "15s"\nname = "A{index}"\n')
        + '[[devices]]\nid = "wm-10-0-1-11"\npoll_interval = "30s"\nenabled = false\n'
    )
    devices = {d.id: d for d in load(tmp_path, text).settings.devices}
    assert list(devices) == ["wm-10-0-1-10", "wm-10-0-1-11", "wm-10-0-1-12"]
    first, refined = devices["wm-10-0-1-10"], devices["wm-10-0-1-11"]
    assert (first.kind, field(first, "host"), field(first, "port")) == (
        "whatsminer",
        "10.0.1.10",
        4028,
    )
    assert first.poll_interval == 15.0  # the group beats the defaults
    assert refined.poll_interval == 30.0  # the device entry beats the group
    assert not refined.enabled and first.enabled
    assert (first.timeout, first.allow_commands) == (3.0, ["reboot"])  # from the defaults
    assert [d.name for d in devices.values()] == ["A1", "A2", "A3"]
    assert all(d.secret_values() == [PASSWORD] for d in devices.values())


def test_devices_hold_one_copy_of_a_value_they_repeat_and_their_own_secrets(
    tmp_path: Path,
) -> None:
    text = (
        '[defaults.whatsminer]\nallow_commands = ["reboot"]\n'
        + whatsminers('"10.0.1.10-10.0.1.12"')
        + '[[devices]]\nid = "wm-10-0-1-11"\npassword = "own-secret-1"\n'
        + '[[devices]]\nid = "wm-10-0-1-12"\npassword = "own-secret-2"\n'
        + "publish.throttle = 5\n"
    )
    first, second, third = load(tmp_path, text).settings.devices
    assert first.publish is second.publish  # the default section, once for the fleet
    assert first.allow_commands is second.allow_commands is third.allow_commands
    assert third.publish.throttle == 5.0 and first.publish.throttle == 0.0
    assert (second.secret_values(), third.secret_values()) == (["own-secret-1"], ["own-secret-2"])


def test_defaults_apply_to_devices_listed_one_by_one(tmp_path: Path) -> None:
    text = (
        '[defaults.xmrig]\ntoken = "tok"\npoll_interval = "2s"\n'
        '[[devices]]\nid = "rig1"\nkind = "xmrig"\nurl = "http://10.0.0.1:44444"\n'
        '[[devices]]\nid = "rig2"\nkind = "xmrig"\nurl = "http://10.0.0.2:44444"\n'
        'poll_interval = "9s"\n'
    )
    rig1, rig2 = load(tmp_path, text).settings.devices
    assert (rig1.poll_interval, rig2.poll_interval) == (2.0, 9.0)
    assert rig1.secret_values() == rig2.secret_values() == ["tok"]


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ('"10.0.1.10-12"', ["10.0.1.10", "10.0.1.11", "10.0.1.12"]),
        ('"10.0.1.254-10.0.2.1"', ["10.0.1.254", "10.0.1.255", "10.0.2.0", "10.0.2.1"]),
        ('"10.0.1.0/30"', ["10.0.1.1", "10.0.1.2"]),  # network and broadcast left out
        ('"10.0.1.7/32"', ["10.0.1.7"]),
        (
            '["10.0.1.9", "Miner-A.lan", "10.0.3.1-2"]',
            ["10.0.1.9", "miner-a.lan", "10.0.3.1", "10.0.3.2"],
        ),
        ('"fd00::1-fd00::2"', ["fd00::1", "fd00::2"]),
    ],
)
def test_host_lists_ranges_and_networks(tmp_path: Path, hosts: str, expected: list[str]) -> None:
    devices = load(tmp_path, whatsminers(hosts, "wm-{index}")).settings.devices
    assert [field(d, "host") for d in devices] == expected
    assert [d.id for d in devices] == [f"wm-{n}" for n in range(1, len(expected) + 1)]


def test_exclude_leaves_hosts_out(tmp_path: Path) -> None:
    text = whatsminers('"10.0.1.1-10"', extra='exclude = ["10.0.1.2-9"]\n')
    assert [d.id for d in load(tmp_path, text).settings.devices] == ["wm-10-0-1-1", "wm-10-0-1-10"]


def test_ports_make_one_device_per_host_and_port(tmp_path: Path) -> None:
    text = (
        '[[groups]]\nkind = "xmrig"\nhosts = ["10.0.5.1", "10.0.5.2"]\nports = "44444-44445"\n'
        'id = "rig-{ip}-{port}"\ntoken = "t"\n'
        '[[groups]]\nkind = "xmrig"\nhosts = "fd00::7"\nports = [8080]\nid = "v6-{index:03}"\n'
        'url = "https://{host}:{port}/"\n'
    )
    devices = load(tmp_path, text).settings.devices
    assert [(d.id, field(d, "url")) for d in devices] == [
        ("rig-10-0-5-1-44444", "http://10.0.5.1:44444/"),
        ("rig-10-0-5-1-44445", "http://10.0.5.1:44445/"),
        ("rig-10-0-5-2-44444", "http://10.0.5.2:44444/"),
        ("rig-10-0-5-2-44445", "http://10.0.5.2:44445/"),
        ("v6-001", "https://[fd00::7]:8080/"),
    ]


def test_srs_and_whatsminer_groups_use_the_usual_ports(tmp_path: Path) -> None:
    text = (
        '[[groups]]\nkind = "srs"\nhosts = "10.0.6.1"\nid = "srs-{ip}"\n'
        + whatsminers('"10.0.6.2"', extra="port = 14028\n")
        + whatsminers('"10.0.6.3"', "wm3-{ip}", "ports = [4029, 4030]\n").replace(
            '"wm3-{ip}"', '"wm3-{port}"'
        )
    )
    srs, wm, *more = load(tmp_path, text).settings.devices
    assert field(srs, "url") == "http://10.0.6.1:1985/"
    assert field(wm, "port") == 14028
    assert [(d.id, field(d, "port")) for d in more] == [("wm3-4029", 4029), ("wm3-4030", 4030)]


def test_two_thousand_miners_in_a_few_lines(tmp_path: Path) -> None:
    secret = write(tmp_path, PASSWORD, name="wm.password")
    text = (
        f'[defaults.whatsminer]\npassword_file = "{secret}"\nallow_commands = ["reboot"]\n'
        + whatsminers('["10.0.0.0/22", "10.0.4.1-10.0.4.50", "10.0.5.1-10.0.8.254"]')
        + '[power]\nenabled = true\nmembers = ["wm-10-0-0-*"]\n'
    )
    loaded = load(tmp_path, text)
    devices = loaded.settings.devices
    assert len(devices) == 1022 + 50 + (4 * 256 - 2)  # a /22 has 1022 hosts
    assert len({d.id for d in devices}) == len(devices)
    assert loaded.settings.power.members == [f"wm-10-0-0-{n}" for n in range(1, 256)]
    [group] = loaded.groups
    assert (group.count, group.first, group.last) == (
        len(devices),
        "10.0.0.1:4028",
        "10.0.8.254:4028",
    )


# problems ----------------------------------------------------------------------------------


def test_a_bad_default_is_reported_once_for_the_devices_it_reaches(tmp_path: Path) -> None:
    text = '[defaults.whatsminer]\npoll_interval = "50ms"\n' + whatsminers('"10.0.1.1-250"')
    path, found = problems(tmp_path, text)
    assert found == [
        f"{path}: defaults.whatsminer.poll_interval: must be at least 100ms "
        "(250 devices, first wm-10-0-1-1)"
    ]


def test_group_and_field_problems_all_at_once(tmp_path: Path) -> None:
    text = (
        '[defaults.whatsminer]\npasword = "x"\nid = "wm"\n'
        "[defaults.toaster]\nx = 1\n"
        + whatsminers(
            '["10.0.1.5/24", "miner a", "10.0.2.9-3", "10.0.3.1"]',
            "WM-{ip}",
            'allow_commands = ["reboot", "explode"]\nhost = "x"\ntimeout = 0\n',
        )
        + '[[groups]]\nkind = "xmrig"\nhosts = "10.0.9.1"\nid = "rig-{ip}"\n'
        + '[[groups]]\nkind = "xmrig"\nhosts = "10.0.9.2"\nports = [1, 70000]\nid = "r-{ip}"\n'
        + '[[groups]]\nkind = "srs"\nhosts = "10.0.9.3"\nid = "s-{nope}"\n'
        + '[[groups]]\nkind = "srs"\nhosts = "10.0.9.4-5"\nid = "s"\n'
        + '[[groups]]\nkind = "srs"\nid = "s-{ip}"\n'
        + '[[groups]]\nkind = "srs"\nhosts = "10.9.9.9"\n'
        + '[[groups]]\nkind = "pool"\nhosts = "10.0.0.0/8"\nid = "p-{ip}"\n'
        + '[[groups]]\nhosts = "10.0.9.6"\nid = "k-{ip}"\n'
        + '[[devices]]\nid = "rig1"\nkind = "xmrig"\nurl = "http://10.0.0.1:1"\n'
        + 'poll_interval = "soon"\nallow_commands = ["reboot"]\n'
        + "[agent]\noffline_after = 0\n"
    )
    path, found = problems(tmp_path, text)
    group0 = "groups[0] (WM-{ip})"
    expected = [
        "defaults.whatsminer.pasword: unknown field (check the spelling against "
        "config.example.toml)",
        "defaults.whatsminer.id: an id is per device",
        "defaults.toaster: 'toaster' is not a kind; use one of pool, srs, whatsminer, xmrig",
        f"{group0}.host: a group's addresses go in hosts",
        f"{group0}.hosts: '10.0.1.5/24' has host bits set: the network is 10.0.1.0/24",
        f"{group0}.hosts: 'miner a' is not an address, range, network or host name",
        f"{group0}.hosts: '10.0.2.9-3' ends before it starts",
        "groups[1] (rig-{ip}).url: 'http://{host}:{port}' needs {port}, and this kind has no "
        "usual port: give ports",
        "groups[2] (r-{ip}).ports: a port (1-65535), a list of ports or a range like '44444-44447'",
        "groups[3] (s-{nope}).id: 's-{nope}' has no placeholder {nope}",
        "groups[4] (s).id: gives 's' to 2 devices; include {ip}",
        "groups[5] (s-{ip}).hosts: missing; a list of addresses",
        "groups[6].id: missing; a template like 'srs-{ip}'",
        "groups[7] (p-{ip}).hosts: '10.0.0.0/8' holds 16777216 addresses; a group holds at most "
        "65536",
        "groups[8] (k-{ip}).kind: missing; use one of",
        "devices[0] (rig1).poll_interval: 'soon' is not a duration",
        "devices[0] (rig1).allow_commands: 'reboot' is not a command XMRig has",
        f"{group0}.id: String should match pattern '^[a-z0-9_-]+$'",
        f"{group0}.timeout: must be positive",
        f"{group0}.allow_commands: 'explode' is not a command Whatsminer has",
        "agent.offline_after: Input should be greater than or equal to 1",
    ]
    assert len(found) == len(expected), "\n".join(found)
    for start in expected:
        assert any(p.startswith(f"{path}: {start}") for p in found), (start, found)


def test_overlapping_groups_are_refused_once_per_pair(tmp_path: Path) -> None:
    text = (
        whatsminers('"10.0.1.1-100"', "a-{ip}")
        + whatsminers('"10.0.1.51-150"', "b-{ip}")
        + '[[devices]]\nid = "old"\nkind = "whatsminer"\nhost = "10.0.1.7"\n'
        + '[[devices]]\nid = "spare"\nkind = "whatsminer"\nhost = "10.0.1.8"\nenabled = false\n'
        + '[[devices]]\nid = "rig"\nkind = "xmrig"\nurl = "http://10.0.1.9:4028"\n'
        + '[[devices]]\nid = "p1"\nkind = "pool"\nurl = "https://pool.example"\nuser = "a"\n'
        'api_key = "k1"\n'
        + '[[devices]]\nid = "p2"\nkind = "pool"\nurl = "https://pool.example"\nuser = "b"\n'
        'api_key = "k2"\n'
    )
    path, found = problems(tmp_path, text)
    assert found == [
        f"{path}: groups[0] (a-{{ip}}): 10.0.1.7:4028 is also the address of old (devices[0])",
        f"{path}: groups[0] (a-{{ip}}): 10.0.1.9:4028 is also the address of rig (devices[2])",
        f"{path}: groups[1] (b-{{ip}}): 10.0.1.51:4028 is also the address of a-10-0-1-51 "
        "(groups[0]) (50 devices, first b-10-0-1-51)",
    ]  # a disabled entry and two accounts on one pool API are no overlap


def test_duplicate_ids_across_groups_and_entries(tmp_path: Path) -> None:
    text = (
        whatsminers('"10.0.1.1-3"', "wm-{index}")
        + whatsminers('"10.0.2.1-3"', "wm-{index}")
        + '[[devices]]\nid = "wm-2"\npoll_interval = "1m"\n'
        + '[[devices]]\nid = "wm-2"\npoll_interval = "2m"\n'
    )
    path, found = problems(tmp_path, text)
    assert found == [
        f"{path}: devices[1] (wm-2).id: already used by devices[0]",
        f"{path}: groups[1] (wm-{{index}}).id: already used by groups[0] (2 devices, first wm-1)",
        f"{path}: groups[1] (wm-{{index}}).id: already used by devices[0]",
    ]


def test_an_entry_for_a_group_device_keeps_its_kind_and_address(tmp_path: Path) -> None:
    text = whatsminers('"10.0.1.1-3"') + (
        '[[devices]]\nid = "wm-10-0-1-2"\nhost = "10.0.9.9"\n'
        '[[devices]]\nid = "wm-10-0-1-3"\nkind = "xmrig"\nurl = "http://10.0.1.3:1"\n'
        '[[devices]]\nid = "wm-10-0-1-1"\nhost = "10.0.1.1"\nport = 4028\nname = "same place"\n'
    )
    path, found = problems(tmp_path, text)
    assert found == [
        f"{path}: devices[0] (wm-10-0-1-2).host: wm-10-0-1-2 is groups[0] (wm-{{ip}})'s "
        "whatsminer at 10.0.1.2:4028; an entry for a group's device refines it and keeps its "
        "kind and address (drop host, or choose another id)",
        f"{path}: devices[1] (wm-10-0-1-3).kind: wm-10-0-1-3 is groups[0] (wm-{{ip}})'s "
        "whatsminer at 10.0.1.3:4028; an entry for a group's device refines it and keeps its "
        "kind and address (drop kind, or choose another id)",
    ]


def test_power_members_by_pattern(tmp_path: Path) -> None:
    fleet = (
        whatsminers('"10.0.1.1-3"')
        + '[[devices]]\nid = "rig-a"\nkind = "xmrig"\nurl = "http://10.0.2.1:1"\nnominal_w = 90\n'
        + '[[devices]]\nid = "studio"\nkind = "srs"\nurl = "http://10.0.2.2:1985"\n'
    )
    chosen = load(tmp_path, fleet + '[power]\nmembers = ["rig-a", "wm-*", "wm-10-0-1-2", "*"]\n')
    assert chosen.settings.power.members == ["rig-a", "wm-10-0-1-1", "wm-10-0-1-2", "wm-10-0-1-3"]
    fleet += '[[devices]]\nid = "rig-b"\nkind = "xmrig"\nurl = "http://10.0.2.3:1"\n'
    path, found = problems(tmp_path, fleet + '[power]\nmembers = ["rig-*", "x*", "studio"]\n')
    assert found == [
        f"{path}: power.members: xmrig 'rig-b' needs nominal_w",
        f"{path}: power.members: 'x*' matches no whatsminer or xmrig",
        f"{path}: power.members: 'studio' is not a miner",
    ]


def test_a_member_pattern_that_matches_only_broken_devices_is_not_reported(
    tmp_path: Path,
) -> None:
    text = whatsminers('"10.0.1.1-2"', extra="timeout = 0\n") + '[power]\nmembers = ["wm-*"]\n'
    path, found = problems(tmp_path, text)
    assert found == [
        f"{path}: groups[0] (wm-{{ip}}).timeout: must be positive (2 devices, first wm-10-0-1-1)"
    ]


# environment, secrets, reload --------------------------------------------------------------


def test_environment_overrides_expanded_devices_and_kind_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, whatsminers('"10.0.1.1-2"'))
    environ = {
        "EDGE_AGENT_DEVICE__WM_10_0_1_2__POLL_INTERVAL": "3s",
        "EDGE_AGENT_DEFAULTS__WHATSMINER__PASSWORD": PASSWORD,
        "EDGE_AGENT_DEFAULTS__WHATSMINER__POLL_INTERVAL": "7s",
        "EDGE_AGENT_DEFAULTS__WHATSMINER__ALLOW_COMMANDS": '["reboot", "load_log"]',
        "EDGE_AGENT_DEVICE__WM_10_0_1_2__ALLOW_COMMANDS": '["reboot"]',
    }
    first, second = load_config(path, environ=environ, kinds=KINDS).settings.devices
    assert (first.poll_interval, second.poll_interval) == (7.0, 3.0)
    assert (first.allow_commands, second.allow_commands) == (["reboot", "load_log"], ["reboot"])
    assert first.secret_values() == second.secret_values() == [PASSWORD]
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"EDGE_AGENT_DEFAULTS__TOASTER__X": "1"}, kinds=KINDS)
    assert caught.value.problems == [
        f"{path}: EDGE_AGENT_DEFAULTS__TOASTER__X names no device kind and field"
    ]


def test_a_secret_in_a_group_or_defaults_table_counts_for_the_permissions_warning(
    tmp_path: Path,
) -> None:
    for table in (
        f'[defaults.whatsminer]\npassword = "{PASSWORD}"\n' + whatsminers('"10.0.1.1"'),
        whatsminers('"10.0.1.1"', extra=f'password = "{PASSWORD}"\n'),
        whatsminers('"10.0.1.1"') + f'[[devices]]\nid = "wm-10-0-1-1"\npassword = "{PASSWORD}"\n',
    ):
        loaded = load_config(write(tmp_path, table, mode=0o644), environ={}, kinds=KINDS)
        [warning] = loaded.warnings
        assert "readable by other users" in warning
        assert PASSWORD not in warning


def test_growing_a_range_keeps_the_other_devices_as_they_were(tmp_path: Path) -> None:
    """What SIGHUP relies on: ids from {ip} and unchanged configs for the devices that stay."""
    before = load(tmp_path, whatsminers('"10.0.1.10-20"')).settings.devices
    after = load(tmp_path, whatsminers('["10.0.1.5", "10.0.1.10-30"]')).settings.devices
    old = {d.id: d for d in before}
    new = {d.id: d for d in after}
    assert set(old) < set(new)
    assert all(new[i] == old[i] for i in old)
    assert sorted(set(new) - set(old))[0] == "wm-10-0-1-21"


@pytest.fixture
def rigs(sim_loop: LoopThread) -> Iterator[SimFleet]:
    from edge_agent_sim.xmrig import start_fleet

    fleet = sim_loop.run(start_fleet(3))
    yield fleet
    sim_loop.run(fleet.close())


def test_reload_with_a_grown_group_adds_only_the_new_device(
    tmp_path: Path, broker: Mosquitto, probe: Probe, rigs: SimFleet
) -> None:
    topics = make_settings(broker.url, [])
    base = topics.mqtt.base_topic
    config = tmp_path / "config.toml"
    ports = [device.port for device in rigs.devices]

    def write_group(count: int) -> None:
        config.write_text(
            f'[agent]\nid = "test"\njitter = 0.0\n[mqtt]\nurl = "{broker.url}"\n'
            f'base_topic = "{base}"\n'
            f'[homeassistant]\ndiscovery_prefix = "{topics.homeassistant.discovery_prefix}"\n'
            f'status_topic = "{topics.homeassistant.status_topic}"\n'
            '[defaults.xmrig]\ntoken = "SECRET"\npoll_interval = "0.2s"\n'
            f'[[groups]]\nkind = "xmrig"\nhosts = "127.0.0.1"\nports = {ports[:count]}\n'
            'id = "rig-{port}"\n'
        )
        config.chmod(0o600)

    write_group(2)
    probe.subscribe(f"{base}/#")
    runner = AgentThread(load_config(config, kinds=KINDS).settings, config)
    try:
        for port in ports[:2]:
            probe.wait_for(f"{base}/rig-{port}/availability", lambda m: m.text == "online")
        write_group(3)
        mark = probe.mark()
        changes = runner.run(runner.agent.reload())
        assert changes == {"added": [f"rig-{ports[2]}"], "removed": [], "changed": []}
        probe.wait_for(f"{base}/rig-{ports[2]}/availability", lambda m: m.text == "online")
        assert not any(
            m.text == "offline"
            for port in ports[:2]
            for m in probe.all(f"{base}/rig-{port}/availability", since=mark)
        )
    finally:
        runner.stop()


# check-config ------------------------------------------------------------------------------


def test_check_config_counts_the_expanded_fleet(tmp_path: Path) -> None:
    text = (
        '[agent]\nid = "farm"\n'
        + whatsminers('"10.0.0.0/21"')
        + '[[groups]]\nkind = "xmrig"\nhosts = "10.1.0.1-4"\nports = [44444]\nid = "r-{ip}"\n'
        + '[[devices]]\nid = "wm-10-0-0-9"\nenabled = false\n'
    )
    result = check_config(write(tmp_path, text))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "config.toml"
    assert result.stdout.splitlines() == [
        f"{path}: ok — agent farm, 2050 devices (2046 whatsminer, 4 xmrig), 1 disabled, "
        "broker mqtt://127.0.0.1:1883",
        "  groups[0] (wm-{ip}): 2046 whatsminer, 10.0.0.1:4028 … 10.0.7.254:4028",
        "  groups[1] (r-{ip}): 4 xmrig, http://10.1.0.1:44444 … http://10.1.0.4:44444",
    ]


def test_check_config_lists_overlaps_and_field_errors_together(tmp_path: Path) -> None:
    text = (
        '[mqtt]\nbase_topic = "farm/"\n'
        + whatsminers('"10.0.1.1-20"', "a-{ip}")
        + whatsminers('"10.0.1.11-30"', "b-{ip}", "poll_interval = 0\n")
        + '[power]\nmembers = ["ghost"]\n'
    )
    path = write(tmp_path, text)
    result = check_config(path)
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        f"config error: {path}: groups[1] (b-{{ip}}).poll_interval: must be at least 100ms "
        "(20 devices, first b-10-0-1-11)",
        f"config error: {path}: groups[1] (b-{{ip}}): 10.0.1.11:4028 is also the address of "
        "a-10-0-1-11 (groups[0]) (10 devices, first b-10-0-1-11)",
        f"config error: {path}: mqtt.base_topic: 'farm/' ends with '/', which makes an empty "
        "topic level (e.g. 'farm//rig1'); write 'farm'",
        f"config error: {path}: power.members: 'ghost' is not a configured device",
    ]


def test_the_readme_farm_example_makes_what_the_readme_says(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### A farm in a few lines") :]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = section.split("check-config` prints what that makes:\n\n```\n", 1)[1]
    shown = shown.split("```", 1)[0]
    for name in ("whatsminer.password", "xmrig.token"):
        secret = write(tmp_path, PASSWORD, name=name)
        example = example.replace(f"/etc/edge-agent/secrets/{name}", str(secret))
    path = write(tmp_path, example)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.replace(str(path), "config.toml") == shown
