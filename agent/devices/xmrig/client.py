"""XMRig's HTTP API (seed 000; behaviour from XMRig 6.26's Httpd.cpp in research/http-apis.md).

Speaks HTTP only. Status codes and JSON-RPC errors become agent errors with messages an
operator can act on; the access token never appears in any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from agent.devices.http import KeepAliveClient, Reply, json_body, make_session, send
from agent.errors import (
    AuthError,
    DeviceError,
    ErrorCode,
    ProtocolError,
    UnsupportedError,
)

SUMMARY_PATHS = ("/2/summary", "/1/summary", "/api.json")
NO_SUMMARY = "the miner answers none of /2/summary, /1/summary, /api.json"
if TYPE_CHECKING:
    import requests

Response: TypeAlias = "requests.Response | Reply"
JSON_RPC_ERRORS = {
    -32700: "the miner could not parse the request",
    -32600: "the miner found the request invalid",
    -32601: "this XMRig version has no such method",
}


class XmrigClient:
    def __init__(
        self, url: str, *, token: str | None, timeout: float, verify: bool | str = True
    ) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self._verify = verify
        self._token = token
        self._session: requests.Session | None = None
        # Polls (the agent's hot path) go over one asyncio keep-alive connection; writes and
        # one-shot CLI calls keep a requests session, made (and requests imported) on first use.
        self.polls = KeepAliveClient(
            self.base,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
            verify=verify,
        )
        self.summary_path: str | None = None  # the newest one this miner answered

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = make_session(verify=self._verify)
            if self._token:
                self._session.headers["Authorization"] = f"Bearer {self._token}"
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    async def aclose(self) -> None:
        await self.polls.close()

    def summary(self) -> dict[str, Any]:
        for path in self._summary_paths():
            body = self._summary_reply(path, self._request("GET", path))
            if body is not None:
                return body
        raise UnsupportedError(NO_SUMMARY)

    async def summary_async(self) -> dict[str, Any]:
        for path in self._summary_paths():
            body = self._summary_reply(path, await self.polls.get(path))
            if body is not None:
                return body
        raise UnsupportedError(NO_SUMMARY)

    def _summary_paths(self) -> tuple[str, ...]:
        return (self.summary_path,) if self.summary_path else SUMMARY_PATHS

    def _summary_reply(self, path: str, response: Response) -> dict[str, Any] | None:
        if response.status_code == 404 and not self.summary_path:
            return None  # an older XMRig: try the next API version
        body = self._expect_json(response, path)
        if not isinstance(body, dict):
            raise ProtocolError(f"{path} did not answer a JSON object")
        self.summary_path = path
        return body

    def backends(self) -> list[dict[str, Any]] | None:
        """`/2/backends`, or None when this XMRig predates it."""
        return self._backends_reply(self._request("GET", "/2/backends"))

    async def backends_async(self) -> list[dict[str, Any]] | None:
        return self._backends_reply(await self.polls.get("/2/backends"))

    def _backends_reply(self, response: Response) -> list[dict[str, Any]] | None:
        if response.status_code == 404:
            return None
        body = self._expect_json(response, "/2/backends")
        if not isinstance(body, list):
            raise ProtocolError("/2/backends did not answer a JSON list")
        return body

    @property
    def config_path(self) -> str:
        """`/1/config` on miners that answer only `/1/summary`; `/2/config` otherwise."""
        return "/1/config" if self.summary_path == "/1/summary" else "/2/config"

    def get_config(self) -> dict[str, Any]:
        return self._config_reply(self.config_path, self._request("GET", self.config_path))

    async def get_config_async(self) -> dict[str, Any]:
        return self._config_reply(self.config_path, await self.polls.get(self.config_path))

    def _config_reply(self, path: str, response: Response) -> dict[str, Any]:
        try:
            body = self._expect_json(response, path)
        except ProtocolError:  # the usual message quotes the body, which holds the token
            raise ProtocolError(f"{path} answered a body that is not JSON") from None
        if not isinstance(body, dict):
            raise ProtocolError(f"{path} did not answer a JSON object")
        return body

    def put_config(self, config: dict[str, Any]) -> None:
        path = self.config_path
        response = self._request("PUT", path, json=config)
        if response.status_code == 400:
            raise DeviceError(
                "the miner rejected the new config (HTTP 400); its old config stays in force",
                device_code=400,
            )
        if response.status_code not in (200, 204):
            self._raise_for_status(response, path)

    def rpc(self, method: str) -> Any:
        body = self._expect_json(
            self._request("POST", "/json_rpc", json={"method": method, "id": 1}), "/json_rpc"
        )
        if not isinstance(body, dict):
            raise ProtocolError("/json_rpc did not answer a JSON object")
        error = body.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            reason = JSON_RPC_ERRORS.get(code) if isinstance(code, int) else None
            message = f"{reason or 'the miner refused'}: {error.get('message', '')}".rstrip(": ")
            refused = UnsupportedError if code == -32601 else DeviceError
            raise refused(f"{method}: {message}", device_code=code)
        return body.get("result")

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return send(self.session, method, self.base + path, timeout=self.timeout, **kwargs)

    def _expect_json(self, response: Response, path: str) -> Any:
        if response.status_code >= 400:
            self._raise_for_status(response, path)
        return json_body(response)

    def _raise_for_status(self, response: Response, path: str) -> None:
        status = response.status_code
        if status == 401:
            raise AuthError(
                "the miner requires an access token (HTTP 401): set the device's token, or "
                "the miner has none configured while one was sent",
                device_code=401,
            )
        if status == 403:
            raise AuthError(
                f"{path} forbidden (HTTP 403): the access token is wrong, or the miner's API "
                "is restricted (http.restricted = true) and refuses this request",
                device_code=403,
            )
        if status == 404:
            raise UnsupportedError(
                f"{path} does not exist on this miner (HTTP 404)", device_code=404
            )
        if status == 415:
            raise DeviceError(
                f"{path}: the miner refused the body's content type (HTTP 415)", device_code=415
            )
        raise DeviceError(
            f"{path} failed with HTTP {status} {response.reason or ''}".rstrip(),
            device_code=status,
            code=ErrorCode.DEVICE,
        )
