"""The agent against a broker that demands TLS and a password, and over MQTT 3.1.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_agent_sim.fleet import SimFleet
from tests.harness import AgentThread, Mosquitto, Probe, free_port, make_settings, wait_until

USER, PASSWORD = "edge", "s3cret-pass"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("certs")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=d,
    )
    return d


class SecureMosquitto(Mosquitto):
    def __init__(self, workdir: Path, certs: Path) -> None:
        super().__init__(workdir)
        self.certs = certs
        self.plain_port = free_port()

    def start(self) -> None:
        passwords = self.workdir / "passwd"
        subprocess.run(
            [
                shutil.which("mosquitto_passwd") or "mosquitto_passwd",
                "-b",
                "-c",
                str(passwords),
                USER,
                PASSWORD,
            ],
            check=True,
            capture_output=True,
        )
        conf = self.workdir / "secure.conf"
        conf.write_text(
            # As root, mosquitto would drop to its own user, which cannot read pytest's files.
            f"{'user root' if os.geteuid() == 0 else ''}\n"
            "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {passwords}\npersistence false\n"
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.certs / 'ca.pem'}\ncertfile {self.certs / 'server.pem'}\n"
            f"keyfile {self.certs / 'server.key'}\n"
            f"listener {self.plain_port} 127.0.0.1\n"
        )
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        from tests.harness import port_open

        wait_until(lambda: port_open(self.port) and port_open(self.plain_port), 10, "mosquitto")


@pytest.fixture
def secure_broker(tmp_path: Path, certs: Path) -> Iterator[SecureMosquitto]:
    server = SecureMosquitto(tmp_path, certs)
    server.start()
    yield server
    server.stop()


def authed_probe(port: int) -> Probe:
    """A plain-listener probe with the broker's password (paho needs it before connecting)."""

    class AuthedProbe(Probe):
        def __post_init__(self) -> None:
            self._cond = threading.Condition()
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=self.protocol)
            self.client.username_pw_set(USER, PASSWORD)
            self.client.on_message = self._on_message
            connected = threading.Event()
            self.client.on_connect = lambda *a: connected.set()
            self.client.connect("127.0.0.1", self.port)
            self.client.loop_start()
            assert connected.wait(10)

    return AuthedProbe(port)


def device(fleet: SimFleet) -> dict[str, object]:
    d = fleet.devices[0]
    return {
        "id": "rig1",
        "kind": "xmrig",
        "url": d.url,
        "token": d.model.token,
        "poll_interval": "1s",
    }


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_tls_with_a_ca_file_and_a_password(
    secure_broker: SecureMosquitto, certs: Path, xmrig_fleet: SimFleet, protocol: str
) -> None:
    settings = make_settings(
        f"mqtts://127.0.0.1:{secure_broker.port}",
        [device(xmrig_fleet)],
        mqtt={
            "ca_file": str(certs / "ca.pem"),
            "username": USER,
            "password": PASSWORD,
            "protocol": protocol,
        },
    )
    probe = authed_probe(secure_broker.plain_port)
    base = settings.mqtt.base_topic
    probe.subscribe(f"{base}/#")
    runner = AgentThread(settings)
    try:
        probe.wait_for(f"{base}/bridge/test/state", lambda m: m.text == "online")
        assert probe.wait_for(f"{base}/rig1").json()["hashrate_hs"]["10s"] > 0
        assert runner.agent.link.client._ssl  # the session really is TLS
    finally:
        runner.stop()
        probe.close()


def test_wrong_password_is_refused_and_the_agent_keeps_polling(
    secure_broker: SecureMosquitto,
    certs: Path,
    xmrig_fleet: SimFleet,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(
        f"mqtts://127.0.0.1:{secure_broker.port}",
        [device(xmrig_fleet)],
        mqtt={
            "ca_file": str(certs / "ca.pem"),
            "username": USER,
            "password": "wrong-one",
            "reconnect_min": 1,
            "reconnect_max": 1,
        },
    )
    runner = AgentThread(settings)
    try:
        worker = runner.agent.workers["rig1"]
        wait_until(lambda: worker.stats.ok >= 2, 10, "polls without a broker session")
        assert not runner.agent.link.connected.is_set()
        output = capsys.readouterr().out
        assert "mqtt connection refused" in output
        assert "wrong-one" not in output
    finally:
        runner.stop()


def untrusted_ca(parent: Path) -> Path:
    """A CA of its own, in `parent`/other, that signed nothing the broker shows."""
    other_ca = parent / "other"
    other_ca.mkdir()
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
        "-keyout", "k.pem", "-out", "ca.pem", cwd=other_ca,
    )  # fmt: skip
    return other_ca


def test_an_untrusted_certificate_is_refused(
    secure_broker: SecureMosquitto, xmrig_fleet: SimFleet, tmp_path: Path
) -> None:
    other_ca = untrusted_ca(tmp_path)
    settings = make_settings(
        f"mqtts://127.0.0.1:{secure_broker.port}",
        [device(xmrig_fleet)],
        mqtt={"ca_file": str(other_ca / "ca.pem"), "username": USER, "password": PASSWORD},
    )
    runner = AgentThread(settings)
    try:
        worker = runner.agent.workers["rig1"]
        wait_until(lambda: worker.stats.ok >= 2, 10, "polls without a broker session")
        assert not runner.agent.link.connected.is_set()
    finally:
        runner.stop()
