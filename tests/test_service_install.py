"""README's "Running it as a service", followed as written, as far as a container allows.

There is no systemd PID 1 here, so the steps run in a scratch root: every `/opt/…` and `/etc/…`
path moves under it, `systemd-sysusers --root` creates the service user in the scratch root's
passwd (seeded with the host's, so its ids are free here), and the service is started the way
the installed unit says (ExecStart, User/Group, UMask, StateDirectory=, Type=notify): as that
uid and gid with no other groups, no capabilities and no new privileges, with the environment
systemd gives it. `systemctl` and `journalctl` steps are what PID 1 would do and are skipped.
Root is needed to create files for another user and to switch to it (CI runs as root).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge_agent_sim.fleet import LoopThread, SimFleet
from tests.harness import REPO, Mosquitto, Probe

UNIT = REPO / "systemd" / "edge-agent.service"
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SKIPPED_PROGRAMS = ("systemctl", "journalctl")  # PID 1's part


def readme_service_steps() -> list[list[str]]:
    """The commands of README's service block, `&&` chains split, comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Running it as a service\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    steps: list[list[str]] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            steps.append(words[:end])
            words = words[end + 1 :]
    return steps


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@dataclass
class ScratchRoot:
    """Where `/` is for the install; the service user once sysusers made it."""

    path: Path
    user: str = ""
    uid: int = -1
    gid: int = -1
    log: list[str] = field(default_factory=list)

    def moved(self, word: str) -> str:
        for prefix in ("/opt/", "/etc/", "/var/"):
            if word.startswith(prefix):
                return f"{self.path}{word}"
        return word

    def as_service(self, command: list[str]) -> list[str]:
        assert self.uid >= 0, "the service user does not exist yet"
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            *command,
        ]

    def learn_user(self, name: str) -> None:
        for line in (self.path / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                self.user, self.uid, self.gid = name, int(fields[2]), int(fields[3])
                return
        raise AssertionError(f"systemd-sysusers made no user {name!r}")

    def service_env(self, unit: dict[str, list[str]], **extra: str) -> dict[str, str]:
        """What systemd puts in a system service's environment for this unit."""
        env = {
            "PATH": SERVICE_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/",
            "USER": self.user,
            "LOGNAME": self.user,
            "SHELL": "/usr/sbin/nologin",
            "INVOCATION_ID": os.urandom(16).hex(),
        }
        for key, variable in (
            ("StateDirectory", "STATE_DIRECTORY"),
            ("ConfigurationDirectory", "CONFIGURATION_DIRECTORY"),
        ):
            names = unit.get(key, [])
            if names:
                base = "/var/lib/" if key == "StateDirectory" else "/etc/"
                env[variable] = ":".join(self.moved(base + name) for name in names)
        env.update(extra)
        return env


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, **kwargs
    )


def write_config(path: Path, broker: Mosquitto, base: str, devices: list[dict[str, Any]]) -> None:
    """Edit the installed file in place (as sudoedit does): its owner and mode stay."""
    lines = [
        '[agent]\nid = "svc"\njitter = 0.0',
        f'[mqtt]\nurl = "{broker.url}"\nbase_topic = "{base}"',
        f'[homeassistant]\ndiscovery_prefix = "{base}-ha"\nstatus_topic = "{base}-ha/status"',
    ]
    for device in devices:
        lines.append(
            f'[[devices]]\nid = "{device["id"]}"\nkind = "xmrig"\nurl = "{device["url"]}"\n'
            f'token = "{device["token"]}"\npoll_interval = "1s"'
        )
    with path.open("w") as handle:
        handle.write("\n".join(lines) + "\n")


def rig(fleet: SimFleet, index: int) -> dict[str, Any]:
    device = fleet.devices[index]
    return {"id": f"svc-rig{index + 1}", "url": device.url, "token": device.model.token}


@dataclass
class Installed:
    root: ScratchRoot
    config: Path
    base: str
    fleet: SimFleet


@pytest.fixture(scope="module")
def installed(broker: Mosquitto, sim_loop: LoopThread) -> Iterator[Installed]:
    """README's steps in a scratch root that the service user can traverse."""
    assert os.geteuid() == 0, "installing a service needs root (CI runs as root)"
    from edge_agent_sim.xmrig import start_fleet

    fleet = sim_loop.run(start_fleet(2))
    scratch = Path(tempfile.mkdtemp(prefix="edge-agent-root-", dir="/tmp"))
    scratch.chmod(0o755)
    root = ScratchRoot(scratch)
    for folder in ("opt", "etc/sysusers.d", "etc/systemd/system", "var/lib", "run"):
        (scratch / folder).mkdir(parents=True, exist_ok=True)
    for name in ("passwd", "group"):  # world-readable; never the shadow files
        shutil.copyfile(f"/etc/{name}", scratch / "etc" / name)
    base = f"svcinst-{os.getpid()}"
    config = scratch / "etc" / "edge-agent" / "config.toml"
    try:
        for step in readme_service_steps():
            follow_step(root, step, lambda: write_config(config, broker, base, [rig(fleet, 0)]))
        yield Installed(root, config, base, fleet)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        sim_loop.run(fleet.close())


def follow_step(root: ScratchRoot, words: list[str], edit_config: Any) -> None:
    as_service = False
    if words[0] == "sudo":
        words = words[1:]
        if words[:2] == ["-u", "edge-agent"]:
            as_service, words = True, words[2:]
    if words[0] in SKIPPED_PROGRAMS:
        root.log.append(f"skipped (PID 1): {shlex.join(words)}")
        return
    command = [root.moved(word) for word in words]
    if words[0] == "install" and "-g" in words:  # the group sysusers made, by number
        command[words.index("-g") + 1] = str(root.gid)
    if words[0] == "systemd-sysusers":
        command.insert(1, f"--root={root.path}")
    if as_service:
        command = root.as_service(command)
    done = run(command, cwd=REPO, umask=0o022)  # sudo's umask
    root.log.append(f"{shlex.join(command)} -> {done.returncode}")
    assert done.returncode == 0, f"README step {shlex.join(words)!r} failed:\n{done.stderr}"
    if words[0] == "systemd-sysusers":
        root.learn_user("edge-agent")
    if "config.example.toml" in words:
        edit_config()  # "then edit it"


class NotifySocket:
    """systemd's notify socket for Type=notify, writable by the service user as PID 1's is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o777)
        self.sock.settimeout(30)

    def wait_for(self, word: str) -> list[str]:
        seen: list[str] = []
        while not any(word in message for message in seen):
            seen.append(self.sock.recv(4096).decode())
        return seen

    def close(self) -> None:
        self.sock.close()


def start_unit(root: ScratchRoot, notify: NotifySocket, log: Path) -> subprocess.Popen[bytes]:
    """Start the installed unit's ExecStart as systemd would for Type=notify."""
    unit = unit_settings(root.path / "etc" / "systemd" / "system" / "edge-agent.service")
    assert unit["User"] == [root.user] and unit["Group"] == [root.user]
    assert unit.get("DynamicUser", ["no"]) == ["no"]  # a static user, or no group to read by
    assert unit["Type"] == ["notify"]
    for name in unit.get("StateDirectory", []):
        state = Path(root.moved(f"/var/lib/{name}"))
        state.mkdir(mode=int(unit.get("StateDirectoryMode", ["0755"])[0], 8))
        os.chown(state, root.uid, root.gid)
    command = [root.moved(word) for word in shlex.split(unit["ExecStart"][0])]
    env = root.service_env(unit, NOTIFY_SOCKET=str(notify.path))
    with log.open("wb") as output:
        return subprocess.Popen(
            root.as_service(command),
            cwd="/",
            env=env,
            umask=int(unit["UMask"][0], 8),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_readme_install_gives_a_service_that_reads_its_config_and_comes_online(
    installed: Installed, broker: Mosquitto, probe: Probe
) -> None:
    root, base = installed.root, installed.base
    etc = installed.config.parent
    assert (etc.stat().st_mode & 0o7777, etc.stat().st_uid, etc.stat().st_gid) == (
        0o750,
        0,
        root.gid,
    )
    mode = installed.config.stat()
    assert (mode.st_mode & 0o7777, mode.st_uid, mode.st_gid) == (0o640, 0, root.gid)
    assert any("check-config" in line and line.endswith("-> 0") for line in root.log)
    assert any(line.startswith("skipped (PID 1): systemctl enable") for line in root.log)

    probe.subscribe(f"{base}/#")
    notify = NotifySocket(root.path / "run" / "notify")
    log = root.path / "agent.log"
    service = start_unit(root, notify, log)
    try:
        assert any("READY=1" in m for m in notify.wait_for("READY=1"))
        probe.wait_for(f"{base}/bridge/svc/state", lambda m: m.text == "online")
        probe.wait_for(f"{base}/svc-rig1/availability", lambda m: m.text == "online")
        state = probe.wait_for(f"{base}/svc-rig1", lambda m: bool(m.payload)).json()
        assert state["miner_id"]
        with open(f"/proc/{service.pid}/status") as status:
            ids = {k: v.split() for k, v in (line.split(":", 1) for line in status)}
        assert ids["Uid"][0] == str(root.uid) and ids["Groups"] == []
        # `systemctl reload` re-reads the file the service can read (a credential would not).
        mark = probe.mark()
        fleet = installed.fleet
        write_config(installed.config, broker, base, [rig(fleet, 0), rig(fleet, 1)])
        service.send_signal(signal.SIGHUP)
        probe.wait_for(f"{base}/svc-rig2/availability", lambda m: m.text == "online", since=mark)
        service.send_signal(signal.SIGTERM)
        assert service.wait(20) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)
        notify.close()
    text = log.read_text()
    assert "permission denied" not in text
    # $STATE_DIRECTORY is the service's own, to keep data across restarts.
    python = root.moved("/opt/edge-agent/bin/python")
    keep = "import os, pathlib; pathlib.Path(os.environ['STATE_DIRECTORY'], 'kept').write_text('1')"
    unit = unit_settings(UNIT)
    env = root.service_env(unit)
    umask = int(unit["UMask"][0], 8)
    wrote = run(root.as_service([python, "-c", keep]), cwd="/", env=env, umask=umask)
    assert wrote.returncode == 0, wrote.stderr
    kept = Path(env["STATE_DIRECTORY"]) / "kept"
    assert (kept.stat().st_uid, kept.stat().st_mode & 0o777) == (root.uid, 0o600)
    assert "readable by other users" not in text  # 0640 to its group is not "others"


def test_a_config_only_root_can_read_is_refused_with_status_78(installed: Installed) -> None:
    """What the earlier install gave (root-only 0600, the service user in no group)."""
    root = installed.root
    private = root.path / "etc" / "edge-agent-root-only"
    private.mkdir(mode=0o750)
    config = private / "config.toml"
    shutil.copyfile(installed.config, config)
    config.chmod(0o600)
    agent = root.moved("/opt/edge-agent/bin/edge-agent")
    done = run(root.as_service([agent, "run", "-c", str(config)]), cwd="/")
    assert done.returncode == 78
    assert f"{config}: permission denied" in done.stderr
    granted = run(root.as_service([agent, "check-config", "-c", str(installed.config)]), cwd="/")
    assert granted.returncode == 0, granted.stderr


def unit_with_install_path(tmp_path: Path) -> Path:
    """The unit with ExecStart at this checkout's entry point: verify checks that it exists."""
    entry = Path(sys.executable).parent / "edge-agent"
    assert entry.is_file(), f"{entry}: pip install -e . first"
    copy = tmp_path / "edge-agent.service"
    copy.write_text(UNIT.read_text().replace("/opt/edge-agent/bin/edge-agent", str(entry)))
    return copy


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    done = run(["systemd-analyze", "verify", str(unit_with_install_path(tmp_path))])
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_systemd_analyze_security_rates_the_unit_as_readme_says(tmp_path: Path) -> None:
    done = run(
        ["systemd-analyze", "security", "--offline=yes", str(unit_with_install_path(tmp_path))]
    )
    rating = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", done.stdout)
    assert rating, done.stdout + done.stderr
    score, level = float(rating.group(1)), rating.group(2)
    assert level in ("PERFECT", "SAFE", "OK"), rating.group(0)
    stated = re.search(r"rates it \*\*(\d+\.\d) (\w+)\*\*", (REPO / "README.md").read_text())
    assert stated and (float(stated.group(1)), stated.group(2)) == (score, level)
