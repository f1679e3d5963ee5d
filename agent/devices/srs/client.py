"""SRS's HTTP API (seed 003; behaviour of SRS 7.0.18 from fixtures/srs-real, research/http-apis.md).

Speaks HTTP only. SRS reports most failures inside HTTP 200 as `{"code": N}`, answers unknown
paths under /api/v1 with its navigation document, and redirects collection URLs without the
trailing slash; each of those becomes an agent error here, so callers see data or an error,
never a navigation page. The password never appears in any message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from agent.devices.http import json_body, make_session, send
from agent.errors import AuthError, DeviceError, ErrorCode, ProtocolError, UnsupportedError

API = "/api/v1"
SRS_ERRORS = {
    100: "SRS test error",
    1060: "the raw API does not allow this rpc",
    1061: (
        "the raw API is disabled on this SRS: enable http_api.raw_api.enabled and "
        "http_api.raw_api.allow_reload in its config"
    ),
    2048: "stream not found",
    2049: "client not found (it may have just disconnected)",
}
SRS_PAGE_FLOOR = 10  # SRS reads `count` as max(10, count)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who answered: `server` (persisted by SRS 5+ across restarts), `service` and `pid`
    (new with every process). Any change means SRS restarted, or another SRS answers."""

    server: str | None
    service: str | None
    pid: str | None


@dataclass(slots=True)
class Listing:
    """A paged collection read to the end, or up to the caller's cap."""

    items: list[dict[str, Any]]
    truncated: bool  # more exist than the cap allowed
    requests: int


class SrsClient:
    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        verify: bool | str = True,
        page_size: int = 500,
    ) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.page_size = max(page_size, SRS_PAGE_FLOOR)
        self.session = make_session(verify=verify)
        # Passed with every request too: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in
        # the environment override a session's `verify`, which would undo verify_tls.
        self.verify = verify
        self.authenticated = username is not None
        if username is not None:
            self.session.auth = (username, password or "")
        self.identity: Identity | None = None  # from the latest reply that carried one

    def close(self) -> None:
        self.session.close()

    # --- reads -------------------------------------------------------------------------
    def versions(self) -> dict[str, Any]:
        return self._data("versions")

    def summaries(self) -> dict[str, Any]:
        return self._data("summaries")

    def rusages(self) -> dict[str, Any]:
        return self._data("rusages")

    def self_proc_stats(self) -> dict[str, Any]:
        return self._data("self_proc_stats")

    def system_proc_stats(self) -> dict[str, Any]:
        return self._data("system_proc_stats")

    def meminfos(self) -> dict[str, Any]:
        return self._data("meminfos")

    def features(self) -> dict[str, Any]:
        return self._data("features")

    def vhosts(self) -> list[dict[str, Any]]:
        return _objects(self.get(f"{API}/vhosts/", "vhosts"), "vhosts")

    def streams(self, limit: int) -> Listing:
        return self._read_all("streams", limit)

    def clients(self, limit: int) -> Listing:
        return self._read_all("clients", limit)

    def stream(self, stream_id: str) -> dict[str, Any]:
        return _object(self.get(f"{API}/streams/{quote(stream_id, safe='')}", "stream"), "stream")

    def client(self, client_id: str) -> dict[str, Any]:
        return _object(self.get(f"{API}/clients/{quote(client_id, safe='')}", "client"), "client")

    def raw_api(self) -> dict[str, Any]:
        """Raw API `rpc=raw`: SRS's `http_api.raw_api` switches (`enabled`, `allow_reload`,
        …). SRS answers it whether or not the raw API is on, so it tells what a reload would
        meet without trying one."""
        http_api = self.get(f"{API}/raw", "http_api", params={"rpc": "raw"})["http_api"]
        switches = http_api.get("raw_api") if isinstance(http_api, dict) else None
        if not isinstance(switches, dict):
            raise ProtocolError("SRS's rpc=raw reply has no http_api.raw_api object")
        return switches

    # --- writes ------------------------------------------------------------------------
    def kick_client(self, client_id: str) -> dict[str, Any]:
        """`DELETE /api/v1/clients/{id}`: SRS closes that connection (player or publisher)."""
        return self.call("DELETE", f"{API}/clients/{quote(client_id, safe='')}")

    def reload(self) -> dict[str, Any]:
        """Raw API `rpc=reload`: SRS re-reads its config file, like `killall -1 srs`."""
        return self.call("GET", f"{API}/raw", params={"rpc": "reload"})

    # --- plumbing ----------------------------------------------------------------------
    def get(self, path: str, key: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A successful reply that carries `key`; the navigation document means SRS has no
        such API (an older version, or a proxy path that is off by a segment)."""
        body = self.call("GET", path, params=params)
        if key not in body:
            if "urls" in body:
                raise UnsupportedError(
                    f"{path}: this SRS has no such API (it answered its API navigation "
                    "document); it may be too old for it",
                )
            raise ProtocolError(f"{path}: the reply has no {key!r}")
        return body

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = send(
            self.session,
            method,
            self.base + path,
            timeout=self.timeout,
            verify=self.verify,
            **kwargs,
        )
        if response.status_code != 200:
            self._raise_for_status(response, path)
        body = json_body(response)
        if not isinstance(body, dict):
            raise ProtocolError(f"{path}: SRS answered {type(body).__name__}, not a JSON object")
        code = body.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            raise ProtocolError(f"{path}: the reply has no numeric `code`")
        if code != 0:
            reason = SRS_ERRORS.get(code, "SRS refused the request")
            raise DeviceError(f"{path}: {reason} (SRS code {code})", device_code=code)
        if "server" in body:
            self.identity = Identity(
                _text(body.get("server")), _text(body.get("service")), _text(body.get("pid"))
            )
        return body

    def _data(self, name: str) -> dict[str, Any]:
        return _object(self.get(f"{API}/{name}", "data"), "data")

    def _read_all(self, collection: str, limit: int) -> Listing:
        """Page through `start`/`count` until a short page. SRS pages a map ordered by id, so
        an item that appears between two pages may show twice: ids are de-duplicated."""
        items: list[dict[str, Any]] = []
        seen: set[Any] = set()
        start = requests_made = 0
        while True:
            # Ask for one more than the cap allows, so a full last page tells "more exist".
            count = min(self.page_size, max(limit - len(items) + 1, SRS_PAGE_FLOOR))
            params = {"start": start, "count": count}
            body = self.get(f"{API}/{collection}/", collection, params=params)
            page = _objects(body, collection)
            requests_made += 1
            fresh = [item for item in page if _item_key(item) not in seen]
            seen.update(_item_key(item) for item in fresh)
            seen.discard(None)  # items without a usable id are never taken for repeats
            items.extend(fresh)
            if len(items) > limit:
                return Listing(items[:limit], truncated=True, requests=requests_made)
            # A short page is the end; a page with nothing new means the server ignores
            # paging (SRS before 4 returned every stream whatever the query).
            if len(page) < count or not fresh:
                return Listing(items, truncated=False, requests=requests_made)
            start += len(page)

    def _raise_for_status(self, response: requests.Response, path: str) -> None:
        status = response.status_code
        if status == 401:
            if self.authenticated:
                raise AuthError(
                    "SRS refused the credentials (HTTP 401): wrong username or password",
                    device_code=401,
                )
            raise AuthError(
                "SRS requires a username and password (HTTP 401, http_api.auth is on): set "
                "the device's username and password",
                device_code=401,
            )
        if status == 403:
            raise AuthError(f"{path} forbidden (HTTP 403)", device_code=403)
        if status in (301, 302, 303, 307, 308):
            target = response.headers.get("Location", "?")
            raise ProtocolError(
                f"{path} redirected (HTTP {status}) to {target}: check the device url "
                "(a proxy in front of SRS?)"
            )
        if status == 404:
            raise UnsupportedError(f"{path} does not exist here (HTTP 404): is this SRS's API?")
        raise DeviceError(
            f"{path} failed with HTTP {status} {response.reason or ''}".rstrip(),
            device_code=status,
            code=ErrorCode.DEVICE,
        )


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body[key]
    if not isinstance(value, dict):
        raise ProtocolError(f"SRS's {key!r} is {type(value).__name__}, not an object")
    return value


def _objects(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ProtocolError(f"SRS's {key!r} is not a list of objects")
    return value


def _item_key(item: dict[str, Any]) -> str | int | None:
    ident = item.get("id")
    return ident if isinstance(ident, str | int) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
