"""SRS client against the simulator over real sockets, and the simulator against the captures."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from agent.devices.srs.client import SrsClient
from agent.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
    UnsupportedError,
)
from edge_agent_sim.fleet import LoopThread, SimDevice
from edge_agent_sim.srs import SrsModel, start_fleet

CAPTURES = Path(__file__).resolve().parent / "fixtures" / "srs-real"


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("srs-sim")
    yield thread
    thread.stop()


@pytest.fixture
def serve(loop: LoopThread) -> Iterator[Callable[..., SimDevice]]:
    fleets = []

    def start(**options: Any) -> SimDevice:
        fleet = loop.run(start_fleet(1, **options))
        fleets.append(fleet)
        return fleet.devices[0]

    yield start
    for fleet in fleets:
        loop.run(fleet.close())


def steer(loop: LoopThread, device: SimDevice, action: Callable[[SrsModel], Any]) -> Any:
    return loop.call(lambda: action(device.model))


# --- paging --------------------------------------------------------------------------------
def test_paging_reads_every_stream_to_the_end(serve: Callable[..., SimDevice]) -> None:
    device = serve(streams=47, players=0)
    client = SrsClient(device.url, page_size=10)
    listing = client.streams(limit=1000)
    assert len({s["id"] for s in listing.items}) == 47
    assert listing.truncated is False
    assert listing.requests == 5  # 10+10+10+10+7
    pages = [p for m, p in device.model.requests if p.startswith("/api/v1/streams/")]
    assert pages[-1] == "/api/v1/streams/?start=40&count=10"


def test_paging_a_full_last_page_costs_one_probe(serve: Callable[..., SimDevice]) -> None:
    device = serve(streams=20, players=0)
    listing = SrsClient(device.url, page_size=10).streams(limit=1000)
    assert (len(listing.items), listing.truncated, listing.requests) == (20, False, 3)


def test_clients_are_capped_and_flagged_truncated(serve: Callable[..., SimDevice]) -> None:
    device = serve(streams=5, players=4)  # 25 clients
    client = SrsClient(device.url, page_size=10)
    capped = client.clients(limit=12)
    assert (len(capped.items), capped.truncated) == (12, True)
    exact = client.clients(limit=25)
    assert (len(exact.items), exact.truncated) == (25, False)


def test_client_never_asks_srs_for_fewer_than_ten(serve: Callable[..., SimDevice]) -> None:
    device = serve(streams=15, players=0)
    listing = SrsClient(device.url, page_size=100).streams(limit=3)
    assert (len(listing.items), listing.truncated) == (3, True)
    assert device.model.requests[-1] == ("GET", "/api/v1/streams/?start=0&count=10")


def test_simulator_pages_like_srs_7(serve: Callable[..., SimDevice]) -> None:
    device = serve(streams=12, players=0)
    page = requests.get(f"{device.url}/api/v1/streams/?start=0&count=1", timeout=5).json()
    assert len(page["streams"]) == 10  # count is at least 10, as captured
    default = requests.get(f"{device.url}/api/v1/streams/", timeout=5).json()
    assert len(default["streams"]) == 10
    ids = [s["id"] for s in default["streams"]]
    assert ids == sorted(ids)
    rest = requests.get(f"{device.url}/api/v1/streams/?start=10", timeout=5).json()
    assert len(rest["streams"]) == 2


# --- SRS's ways of saying no ---------------------------------------------------------------
def test_collection_without_slash_is_a_302_the_client_never_meets(
    serve: Callable[..., SimDevice],
) -> None:
    device = serve()
    reply = requests.get(f"{device.url}/api/v1/streams", allow_redirects=False, timeout=5)
    assert reply.status_code == 302
    assert reply.headers["Location"] == "/api/v1/streams/"
    assert reply.text == "Redirect to /api/v1/streams/"
    client = SrsClient(device.url)
    client.vhosts(), client.streams(100), client.clients(100)
    assert all(path.split("?")[0].endswith("/") for _, path in device.model.requests[1:])


def test_navigation_document_is_not_taken_for_data(serve: Callable[..., SimDevice]) -> None:
    device = serve()
    client = SrsClient(device.url)
    body = client.call("GET", "/api/v1/nonexistent")
    assert "urls" in body and body["code"] == 0
    with pytest.raises(UnsupportedError, match="navigation document"):
        client.get("/api/v1/nonexistent", "data")


def test_code_inside_http_200_is_a_device_error(serve: Callable[..., SimDevice]) -> None:
    device = serve()
    client = SrsClient(device.url)
    with pytest.raises(DeviceError) as caught:
        client.stream("vid-nope")
    assert caught.value.device_code == 2048
    with pytest.raises(DeviceError) as caught:
        client.client("nope1234")
    assert caught.value.device_code == 2049
    with pytest.raises(DeviceError) as caught:
        client.call("GET", "/api/v1/tests/errors")
    assert caught.value.device_code == 100


def test_reads_of_every_state_endpoint(serve: Callable[..., SimDevice]) -> None:
    device = serve()
    client = SrsClient(device.url)
    assert client.versions()["version"] == "7.0.18"
    assert client.summaries()["self"]["pid"] == device.model.pid
    assert "ru_maxrss" in client.rusages()
    assert client.self_proc_stats()["comm"] == "(srs)"
    assert "idle" in client.system_proc_stats()
    assert "MemTotal" in client.meminfos()
    assert client.features()["features"]["api"] is True
    assert client.identity is not None
    assert client.identity.server == device.model.server_id
    assert client.identity.pid == str(device.model.pid)


def test_kick_then_kick_again_gives_2049(loop: LoopThread, serve: Callable[..., SimDevice]) -> None:
    device = serve(streams=1, players=1)
    client = SrsClient(device.url)
    player = next(c["id"] for c in client.clients(100).items if not c["publish"])
    assert client.kick_client(player)["code"] == 0
    assert player not in {c["id"] for c in client.clients(100).items}
    with pytest.raises(DeviceError, match="client not found") as caught:
        client.kick_client(player)
    assert caught.value.device_code == 2049
    assert steer(loop, device, lambda m: m.kicks) == [player]


def raw(device: SimDevice, rpc: str) -> requests.Response:
    return requests.get(f"{device.url}/api/v1/raw", params={"rpc": rpc}, timeout=5)


def test_a_stock_srs_answers_the_raw_api_as_the_real_one_with_raw_api_off(
    serve: Callable[..., SimDevice],
) -> None:
    device = serve()  # no switches: SRS's defaults, both off
    described = raw(device, "raw")
    real = json.loads((CAPTURES / "noraw_raw.json").read_text())
    real["http_api"]["listen"] = f"127.0.0.1:{device.port}"
    assert described.json() == real
    assert (described.status_code, described.headers["Content-Type"]) == (200, "application/json")
    for rpc in ("reload", "query", "reload-fetch", ""):  # the raw API is checked first
        assert raw(device, rpc).json() == json.loads((CAPTURES / "noraw_reload.json").read_text())
    assert device.model.reloads == 0
    with pytest.raises(DeviceError) as caught:
        SrsClient(device.url).reload()
    assert caught.value.device_code == 1061
    assert "raw_api.enabled" in caught.value.message
    assert SrsClient(device.url).raw_api() == real["http_api"]["raw_api"]


def test_the_raw_api_switched_on_answers_as_the_real_one(
    serve: Callable[..., SimDevice],
) -> None:
    device = serve(raw_api=True, allow_reload=True)
    real = json.loads((CAPTURES / "v1_raw_raw.json").read_text())
    real["http_api"]["listen"] = f"127.0.0.1:{device.port}"
    assert raw(device, "raw").json() == real
    assert raw(device, "reload").json() == json.loads((CAPTURES / "v1_raw_reload.json").read_text())
    assert device.model.reloads == 1
    assert SrsClient(device.url).reload() == {"code": 0}
    assert device.model.reloads == 2
    assert raw(device, "query").json() == json.loads((CAPTURES / "v1_raw_unknown.json").read_text())
    assert SrsClient(device.url).raw_api()["allow_reload"] is True


def test_raw_api_on_with_allow_reload_off_refuses_reloads_only(
    serve: Callable[..., SimDevice],
) -> None:
    device = serve(raw_api=True)
    assert raw(device, "reload").json() == {"code": 1061}
    assert raw(device, "query").json() == {"code": 1060}
    assert raw(device, "reload-fetch").json()["code"] == 0
    assert SrsClient(device.url).raw_api() == {
        "enabled": True,
        "allow_reload": False,
        "allow_query": False,
        "allow_update": False,
    }
    assert device.model.reloads == 0


# --- authentication ------------------------------------------------------------------------
def test_wrong_password_is_an_auth_error_that_hides_the_password(
    serve: Callable[..., SimDevice],
) -> None:
    device = serve(username="admin", password="s3cret-pass")
    with pytest.raises(AuthError, match="wrong username or password") as caught:
        SrsClient(device.url, username="admin", password="hunter2-wrong").summaries()
    assert caught.value.device_code == 401
    assert "hunter2-wrong" not in str(caught.value.as_dict())
    assert "s3cret-pass" not in str(caught.value.as_dict())


def test_missing_credentials_say_what_to_set(serve: Callable[..., SimDevice]) -> None:
    device = serve(username="admin", password="s3cret-pass")
    with pytest.raises(AuthError, match="set the device's username and password"):
        SrsClient(device.url).summaries()
    reply = requests.get(f"{device.url}/api/v1/versions", auth=("admin", ""), timeout=5)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Basic"
    assert reply.content == b""


def test_right_credentials_read(serve: Callable[..., SimDevice]) -> None:
    device = serve(username="admin", password="s3cret-pass")
    client = SrsClient(device.url, username="admin", password="s3cret-pass")
    assert client.versions()["major"] == 7


# --- bad replies ---------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["malformed", "truncated", "garbage", "wrong_types"])
def test_bad_bodies_are_protocol_errors(serve: Callable[..., SimDevice], fault: str) -> None:
    device = serve(fault=fault)
    client = SrsClient(device.url)
    with pytest.raises(ProtocolError):
        client.summaries()
    with pytest.raises(ProtocolError):
        client.streams(100)


def test_fault_on_one_path_leaves_the_others(serve: Callable[..., SimDevice]) -> None:
    device = serve(fault="truncated", fault_on="/clients/")
    client = SrsClient(device.url)
    assert client.streams(100).items
    with pytest.raises(ProtocolError, match="not JSON"):
        client.clients(100)


def test_http_500_is_a_device_error(serve: Callable[..., SimDevice]) -> None:
    with pytest.raises(DeviceError, match="HTTP 500") as caught:
        SrsClient(serve(fault="error500").url).summaries()
    assert caught.value.device_code == 500


def test_a_server_that_never_answers_times_out(serve: Callable[..., SimDevice]) -> None:
    device = serve(fault="hang")
    with pytest.raises(DeviceTimeoutError):
        SrsClient(device.url, timeout=0.3).summaries()


def test_nothing_listening_is_unreachable(
    serve: Callable[..., SimDevice], loop: LoopThread
) -> None:
    fleet = loop.run(start_fleet(1))
    url = fleet.devices[0].url
    loop.run(fleet.close())
    with pytest.raises(UnreachableError):
        SrsClient(url, timeout=2).summaries()


# --- HTTPS ---------------------------------------------------------------------------------
def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "srs.crt", directory / "srs.key"
    try:
        _self_signed_with_cryptography(cert, key)
    except ImportError:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
    return cert, key


def _self_signed_with_cryptography(cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("srs-tls"))


@pytest.fixture
def https_url(serve: Callable[..., SimDevice], tls_files: tuple[Path, Path]) -> str:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    device = serve(ssl_context=context)
    return f"https://{device.host}:{device.port}"


def test_https_self_signed_is_refused_when_verifying(https_url: str) -> None:
    with pytest.raises(UnreachableError, match="TLS failed") as caught:
        SrsClient(https_url, timeout=5).summaries()
    assert "certificate" in caught.value.message.lower()


def test_https_verify_off_reads(https_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets this variable override a session's verify=False; the client must not.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", DEFAULT_CA_BUNDLE_PATH)
    with pytest.warns(Warning):  # urllib3 warns about unverified HTTPS, as it should
        assert SrsClient(https_url, verify=False).versions()["version"] == "7.0.18"


def test_https_with_the_ca_file_reads(
    https_url: str, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", DEFAULT_CA_BUNDLE_PATH)
    client = SrsClient(https_url, verify=str(tls_files[0]))
    assert client.versions()["version"] == "7.0.18"


# --- the simulator answers like the real server --------------------------------------------
def shape(value: Any) -> Any:
    """Keys, nesting and JSON types, without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@pytest.mark.parametrize(
    ("capture", "path"),
    [
        ("v1_versions", "/api/v1/versions"),
        ("v1_summaries", "/api/v1/summaries"),
        ("v1_rusages", "/api/v1/rusages"),
        ("v1_self_proc_stats", "/api/v1/self_proc_stats"),
        ("v1_system_proc_stats", "/api/v1/system_proc_stats"),
        ("v1_meminfos", "/api/v1/meminfos"),
        ("v1_features", "/api/v1/features"),
        ("v1_authors", "/api/v1/authors"),
        ("v1_vhosts", "/api/v1/vhosts/"),
        ("v1_clients", "/api/v1/clients/"),
        ("v1_nonexistent", "/api/v1/nonexistent"),
        ("root", "/"),
        ("v1_client_bogus", "/api/v1/clients/nope1234"),
        ("v1_stream_bogus", "/api/v1/streams/vid-nope"),
        ("v1_tests_errors", "/api/v1/tests/errors"),
    ],
)
def test_simulator_replies_have_the_captured_shape(
    serve: Callable[..., SimDevice], capture: str, path: str
) -> None:
    device = serve(streams=1, players=1)
    reply = requests.get(device.url + path, timeout=5)
    assert reply.headers["Server"] == "SRS/7.0.18(Hang)"
    assert reply.headers["Content-Type"] == "application/json"
    real = json.loads((CAPTURES / f"{capture}.json").read_text())
    assert shape(reply.json()) == shape(real)


def test_simulator_streams_have_the_captured_shape(
    loop: LoopThread, serve: Callable[..., SimDevice]
) -> None:
    device = serve(streams=0)
    steer(loop, device, lambda m: m.start_stream("live/cam1"))
    steer(loop, device, lambda m: m.start_stream("studio.example/show/studio1", audio=False))
    streams = requests.get(f"{device.url}/api/v1/streams/", timeout=5).json()
    real = json.loads((CAPTURES / "v1_streams.json").read_text())
    by_name = {s["name"]: s for s in streams["streams"]}
    real_by_name = {s["name"]: s for s in real["streams"]}
    assert shape(by_name["cam1"]) == shape(real_by_name["cam1"])
    assert shape(by_name["studio1"]) == shape(real_by_name["studio1"])  # audio: null
    assert by_name["studio1"]["url"] == "studio.example/show/studio1"
    one = requests.get(f"{device.url}/api/v1/streams/{by_name['cam1']['id']}", timeout=5).json()
    assert shape(one) == shape(json.loads((CAPTURES / "v1_stream_one.json").read_text()))


def test_simulator_jsonp_and_delete_over_jsonp(
    loop: LoopThread, serve: Callable[..., SimDevice]
) -> None:
    device = serve(streams=1, players=1)
    reply = requests.get(f"{device.url}/api/v1/versions?callback=cb", timeout=5)
    assert reply.headers["Content-Type"] == "text/javascript"
    assert reply.text.startswith("cb({") and reply.text.endswith("})")
    real = (CAPTURES / "v1_versions_jsonp.txt").read_text().strip()
    assert shape(json.loads(reply.text[3:-1])) == shape(json.loads(real[3:-1]))
    player = steer(loop, device, lambda m: next(c.id for c in m.clients.values() if not c.publish))
    kick = requests.get(
        f"{device.url}/api/v1/clients/{player}?callback=cb&method=DELETE", timeout=5
    )
    assert kick.text.startswith('cb({"code":0,')
    assert steer(loop, device, lambda m: player in m.clients) is False


def test_simulator_streams_come_and_go(loop: LoopThread, serve: Callable[..., SimDevice]) -> None:
    device = serve(streams=0)
    publisher = steer(loop, device, lambda m: m.start_stream("live/a"))
    player = steer(loop, device, lambda m: m.add_player("live/a"))
    steer(loop, device, lambda m: m.stop_stream("live/a"))
    streams = requests.get(f"{device.url}/api/v1/streams/", timeout=5).json()["streams"]
    assert streams[0]["publish"] == {"active": False}  # a player still waits on it
    assert streams[0]["video"] is None
    assert steer(loop, device, lambda m: m.remove_client(player)) is True
    assert requests.get(f"{device.url}/api/v1/streams/", timeout=5).json()["streams"] == []
    assert steer(loop, device, lambda m: m.remove_client(publisher)) is False
