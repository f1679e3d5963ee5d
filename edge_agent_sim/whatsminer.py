"""Simulated Whatsminers: API v2 on TCP, one request per connection, like btminer.

Each miner is a `WhatsminerModel` behind its own listening socket, all on the caller's loop.
It keeps an admin password, issues tokens per client IP (32 per IP, 16 IPs, 30-minute life),
decrypts writes and answers them encrypted, refuses the way the firmware does (23 malformed
JSON, 14 unknown command or bad data, 45 plaintext write or write API off, 135 bad token,
136 too many tokens, 137 bad base64), and can send every firmware quirk of
research/whatsminer.md on demand (`quirks`).

Reads follow the doc to the letter by default, and where it is silent each plausible firmware
is a mode. "The API command can be used for two joins": `join_limit="two"` (default) answers
`summary+pools`, and a longer join with its first two parts only (`join_excess="answer_first"`)
or refuses it with 14 (`join_excess="refuse"`); `"any"` joins any number; `"none"` refuses
every join with 14 (`"refuse"`) or answers its first part alone, as a plain read
(`"answer_first"`). set_led's `period`, `duration` and `start` are integers in the doc: a
string is refused with 14 unless `led_fields="lenient"`. `get_psu` reports `iin` and `vin` in
the units the doc's example suggests (`psu_iin_per_amp`, `psu_vin_per_volt`; the doc names no
unit). The simulator shares no code with the driver, the client or the parser (crypto, pinned
by test vectors, aside).

Power follows the vendor doc (§3.3, 3.4, 3.21 to 3.25): set_power_pct lands within a second and
only approximately, set_power_pct_v2 ramps over minutes, power_off drops to standby at once,
power_on ramps slowly unless pre_power_on preheated the boards, power modes, power limits and
target frequency restart btminer (no hash rate for a while). Miners differ in efficiency.
Where the doc is silent, the power model offers each plausible behaviour as a mode:
`power_on_percent` ("keep": power_on comes back at the last set_power_pct, the default, the
case that catches a controller believing its own model; "reset": power_on comes back at 100 %)
and `preheat_s` (simulated seconds until pre_power_on reports complete, default 90; None: it
never does).
Nothing runs in the background: the model is evaluated lazily, on each request, from a
`SimClock` whose `time_scale` makes minutes pass in seconds and which tests can `advance`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
import re
import struct
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from Crypto.Cipher import AES

from agent.devices.whatsminer import crypto
from agent.tools.open_files import raise_open_file_limit
from edge_agent_sim.fleet import SimDevice, SimFleet

QUIRKS = frozenset(
    {
        "nul",  # a NUL byte after every reply
        "newlines",  # raw newlines in the body, one inside a string
        "trailing_comma",  # `,}` in every object
        "missing_comma",  # get_psu: `"…""temp0"` (firmware 2023-01-06)
        "truncate",  # get_error_code cut after `truncate_at` bytes
        "error_code_dict_list",  # API 2.0.4: "error_code":["329":"…"]
        "error_code_objects",  # newer firmware: "error_code":[{"329":"…"}]
        "mineroff",  # status says mineroff, not btmineroff
        "epoch_time",  # get_token sends the whole epoch, not its last 4 digits
        "bare_status",  # status without the STATUS/Code/Msg envelope, as the doc prints it
    }
)
FAULTS = frozenset({"hang", "close", "garbage", "stall"})
JOIN_LIMITS = {"none": 1, "two": 2, "any": None}  # commands one joined read may name
JOIN_EXCESS = frozenset({"answer_first", "refuse"})  # a join longer than the firmware's
LED_FIELDS = frozenset({"integer", "lenient"})  # set_led period/duration/start as the doc types
# Every join behaviour by name, for tests to run a client against each; "two" is the doc's.
JOIN_VARIANTS: dict[str, dict[str, Any]] = {
    "two": {"join_limit": "two", "join_excess": "answer_first"},
    "two_refusing_more": {"join_limit": "two", "join_excess": "refuse"},
    "any": {"join_limit": "any"},
    "none": {"join_limit": "none", "join_excess": "refuse"},
    "none_answering_first": {"join_limit": "none", "join_excess": "answer_first"},
}

MODES = {"low": (0.80, 0.86), "normal": (1.0, 1.0), "high": (1.15, 1.10)}  # power, hash factors
RESTART_S = 90.0  # btminer restart: no hash rate
WARMUP_S = 150.0  # then the ramp back to the target
COLD_START_S = 420.0  # power_on without preheating
PREHEATED_START_S = 15.0
PREHEAT_S = 90.0
POWER_ON_PERCENT = ("keep", "reset")  # what power_on does to a set_power_pct: the doc is silent
FAST_SETTLE_S = 1.0
REBOOT_S = 60.0
FAST_EXPONENT = 1.15  # hash fraction = power fraction ** exponent: fast mode costs more hash
NORMAL_EXPONENT = 0.95
MAX_REQUEST = 1 << 20
DEFAULT_PASSWORD = "admin"  # noqa: S105 - the firmware's documented factory password
_SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TRAILING = re.compile(r'([0-9"el\]])}')
_ERROR_DICT = re.compile(r'"error_code":\{([^{}]*)\}')


class SimClock:
    """Simulated epoch seconds: real time * time_scale, plus whatever tests `advance`."""

    def __init__(self, time_scale: float = 1.0, start: float | None = None) -> None:
        self.time_scale = time_scale
        self._real0 = time.monotonic()
        self._sim0 = time.time() if start is None else start

    def now(self) -> float:
        return self._sim0 + (time.monotonic() - self._real0) * self.time_scale

    def advance(self, seconds: float) -> None:
        self._sim0 += seconds


@dataclass(slots=True)
class Ramp:
    """A linear change of the power fraction between two simulated times."""

    start: float
    end: float
    t0: float
    t1: float

    def at(self, t: float) -> float:
        if t >= self.t1:
            return self.end
        if t <= self.t0:
            return self.start
        return self.start + (self.end - self.start) * (t - self.t0) / (self.t1 - self.t0)


@dataclass(slots=True)
class WriteRecord:
    at: float  # time.monotonic() when it arrived
    sim_time: float
    command: str
    code: int
    ip: str


@dataclass(slots=True)
class _Token:
    sign: str
    expires: float  # time.monotonic()


class RefusalError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


Followup = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
WriteHandler = Callable[["WhatsminerModel", dict[str, Any], float], tuple[Any, Followup | None]]


@dataclass(slots=True)
class Reply:
    body: bytes
    then: Followup | None = None


@dataclass(eq=False)
class WhatsminerModel:
    """One miner. Tests steer it through these attributes (on the simulator's loop)."""

    index: int = 0
    password: str = DEFAULT_PASSWORD
    write_api: bool = True
    quirks: set[str] = field(default_factory=set)
    fault: str | None = None
    unsupported: set[str] = field(default_factory=set)  # commands this firmware lacks (→ 14)
    truncate_at: int = 160
    join_limit: str = "two"
    join_excess: str = "answer_first"
    led_fields: str = "integer"
    psu_iin_per_amp: float = 1000.0  # the doc's "iin":"8718" read as mA
    psu_vin_per_volt: float = 100.0  # the doc's "vin":"22400" read as 10 mV
    firmware_command: str = "update_firmware"  # the other name is refused with 14
    cooling: str = "air"  # "air": set_target_freq only lowers; v2 refused in high mode
    token_life: float = 1800.0  # real seconds, whatever the time scale
    max_tokens_per_ip: int = 32
    max_client_ips: int = 16
    idle_timeout: float = 10.0
    time_scale: float = 1.0
    clock: SimClock | None = None
    seed: int | None = None
    model_name: str = "M30S+VE40"
    firmware_version: str = "20230125.13.Rel"
    rated_power_w: float | None = None  # normal mode, 100 %
    efficiency_j_th: float | None = None
    standby_power_w: float = 18.0
    min_stable_percent: float | None = None
    power_on_percent: str = "keep"  # see POWER_ON_PERCENT
    preheat_s: float | None = PREHEAT_S  # None: pre_power_on never reports complete
    error_codes: dict[str, str] = field(default_factory=dict)
    log_size: int = 48 * 1024

    def __post_init__(self) -> None:
        unknown = set(self.quirks) - QUIRKS
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(QUIRKS)}")
        self.quirks = set(self.quirks)
        _check_choice("join_limit", self.join_limit, JOIN_LIMITS)
        _check_choice("join_excess", self.join_excess, JOIN_EXCESS)
        _check_choice("led_fields", self.led_fields, LED_FIELDS)
        _check_choice("power_on_percent", self.power_on_percent, POWER_ON_PERCENT)
        self.unsupported = set(self.unsupported)
        self.clock = self.clock or SimClock(self.time_scale)
        self.rng = random.Random(self.index if self.seed is None else self.seed)
        rng = self.rng
        self.rated_w: float = self.rated_power_w or round(rng.uniform(3150, 3550))
        self.efficiency: float = self.efficiency_j_th or round(rng.uniform(29.0, 38.0), 2)
        self.min_stable: float = self.min_stable_percent or round(rng.uniform(25, 40))
        self.fast_bias = rng.uniform(-0.05, 0.05)
        self.normal_bias = rng.uniform(-0.02, 0.02)
        self.v2_ramp_s = rng.uniform(120, 240)
        self.salt = self._new_salt()
        self._set_key()
        now = self.clock.now()
        # Live state
        self.mining = True
        self.power_mode = "normal"
        self.power_limit_w = 0.0  # 0: no limit below the rated power
        self.target_freq_percent = 0
        self.target_fraction = 1.0
        self.exponent = NORMAL_EXPONENT
        self.ramp = Ramp(1.0, 1.0, now, now)
        self.restart_until = now - 1
        self.btminer_started = now - 3600
        self.booted = now - 7200
        self.reboot_until = now - 1
        self.preheat_started: float | None = None
        self.accepted = 0.0
        self._share_clock = now
        self.led = "auto"
        self.hostname = f"WhatsMiner{self.index}"
        self.network = {"proto": "dhcp", "ip": f"10.0.{self.index // 250}.{self.index % 250}"}
        self.settings: dict[str, Any] = {}
        self.pools: list[dict[str, str]] = [
            {"url": "stratum+tcp://btc.ss.poolin.com:443", "user": f"sim.{self.index}"}
        ]
        self.tokens: dict[str, list[_Token]] = {}
        # Counters for tests and the bench
        self.tokens_issued = 0
        self.connections = 0
        self.requests = 0
        self.btminer_restarts = 0
        self.reboots = 0
        self.writes: deque[WriteRecord] = deque(maxlen=100_000)
        self.errors_sent: Counter[int] = Counter()
        self.firmware_uploads: list[int] = []
        self.log_downloads = 0

    # ------------------------------------------------------------ helpers

    def _new_salt(self) -> str:
        return "".join(self.rng.choice(_SALT_CHARS) for _ in range(8))

    def _set_key(self) -> None:
        self.key = crypto.derive_key(self.password, self.salt)
        self.aeskey = crypto.aes_key(self.key)

    def now(self) -> float:
        assert self.clock is not None
        return self.clock.now()

    # --------------------------------------------------------- power model

    @property
    def base_power_w(self) -> float:
        """The stable mining power that percents refer to (mode, frequency and limit)."""
        power = self.rated_w * MODES[self.power_mode][0] * self._freq_factor()
        if self.power_limit_w > 0:
            power = min(power, self.power_limit_w)
        return power

    def _freq_factor(self) -> float:
        return max(0.2, 1 + self.target_freq_percent / 100)

    def fraction(self, t: float) -> float:
        """Fraction of base power the hash boards draw now (0 while off or restarting)."""
        if not self.mining or t < self.restart_until:
            return 0.0
        return self.ramp.at(t)

    def power_w(self, t: float) -> float:
        if not self.mining:
            preheat = 0.06 * self.base_power_w if self.preheat_started is not None else 0.0
            return self.standby_power_w + preheat
        if t < self.restart_until:
            return self.standby_power_w + 0.03 * self.base_power_w
        return max(self.standby_power_w, self.base_power_w * self.ramp.at(t))

    def hashrate_hs(self, t: float) -> float:
        fraction = self.fraction(t)
        if fraction <= 0:
            return 0.0
        rated = self.rated_w / self.efficiency * 1e12
        hash_factor = MODES[self.power_mode][1] * min(1.0, self._freq_factor())
        ceiling = min(1.0, self.base_power_w / (self.rated_w * MODES[self.power_mode][0]))
        return rated * hash_factor * ceiling * float(fraction**self.exponent)

    def _restart_btminer(self, t: float) -> None:
        self.btminer_restarts += 1
        self.btminer_started = t
        if self.mining:
            self.restart_until = t + RESTART_S
            start = t + RESTART_S
            self.ramp = Ramp(0.0, self.target_fraction, start, start + WARMUP_S)

    def _aim(self, percent: float, fast: bool, t: float) -> None:
        if percent < self.min_stable:
            # Below what the boards can hold: btminer restarts and runs at its floor.
            self.target_fraction = self.min_stable / 100
            self.exponent = FAST_EXPONENT if fast else NORMAL_EXPONENT
            self._restart_btminer(t)
            return
        bias = self.fast_bias if fast else self.normal_bias
        self.target_fraction = min(1.0, percent / 100 * (1 + bias))
        self.exponent = FAST_EXPONENT if fast else NORMAL_EXPONENT
        if self.mining and t >= self.restart_until:
            settle = FAST_SETTLE_S if fast else self.v2_ramp_s
            self.ramp = Ramp(self.ramp.at(t), self.target_fraction, t, t + settle)
        elif self.mining:
            self.ramp = Ramp(0.0, self.target_fraction, self.ramp.t0, self.ramp.t1)

    def _preheat_done(self, t: float) -> bool:
        if self.preheat_started is None or self.preheat_s is None:
            return False
        return t - self.preheat_started >= self.preheat_s

    # ------------------------------------------------------------- requests

    def handle(self, data: bytes, ip: str) -> Reply:
        """One request → its reply (and, for the binary flows, what follows on the socket)."""
        self.requests += 1
        try:
            request = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return self._plain_error(23, "invalid JSON message")
        if not isinstance(request, dict):
            return self._plain_error(23, "invalid JSON message")
        if "enc" in request:
            return self._encrypted(request, ip)
        command = request.get("cmd", request.get("command"))
        if not isinstance(command, str):
            return self._plain_error(14, "invalid API command or data")
        if command in self._WRITES:
            return self._plain_error(45, "permission denied")
        return self._read(command, request, ip)

    def _read(self, command: str, request: dict[str, Any], ip: str) -> Reply:
        t = self.now()
        if command in self.unsupported or set(command.split("+")) & self.unsupported:
            return self._plain_error(14, "invalid API command or data")
        if "+" in command:
            return self._joined(command.split("+"), t)
        if command in self._CG_READS:
            return Reply(self._render(self._CG_READS[command](self, t)))
        try:
            if command == "get_token":
                return Reply(self._render(self._envelope(134, self._issue_token(ip, t), t)))
            if command == "get_psu":
                return Reply(self._render_psu(self._envelope(131, self._psu(t), t)))
            if command == "get_version":
                return Reply(self._render(self._envelope(131, self._version(), t)))
            if command == "status":
                return Reply(self._render(self._status(t)))
            if command == "get_miner_info":
                wanted = request.get("info") or request.get("parameter") or ""
                return Reply(self._render(self._envelope(131, self._miner_info(wanted), t)))
            if command == "get_error_code":
                return Reply(self._render_error_codes(t))
        except RefusalError as refusal:
            return self._plain_error(refusal.code, refusal.msg)
        return self._plain_error(14, "invalid API command or data")

    def _joined(self, parts: list[str], t: float) -> Reply:
        """`a+b…`: each part's reply under its name, as far as this firmware joins."""
        limit = JOIN_LIMITS[self.join_limit]
        if not all(p in self._CG_READS for p in parts):
            return self._plain_error(14, "invalid API command or data")
        if limit is not None and len(parts) > limit:
            if self.join_excess == "refuse":
                return self._plain_error(14, "invalid API command or data")
            if limit == 1:  # "+…" ignored: the first command's own reply
                return Reply(self._render(self._CG_READS[parts[0]](self, t)))
            parts = parts[:limit]
        body: dict[str, Any] = {p: [self._CG_READS[p](self, t)] for p in parts}
        body["id"] = 1
        return Reply(self._render(body))

    # ---- cgminer-shaped reads

    def _cg_status(self, code: int, msg: str, t: float) -> list[dict[str, Any]]:
        description = "btminer\n" if "newlines" in self.quirks else "btminer"
        return [
            {"STATUS": "S", "When": int(t), "Code": code, "Msg": msg, "Description": description}
        ]

    def _summary(self, t: float) -> dict[str, Any]:
        self._count_shares(t)
        noise = 1 + self.rng.uniform(-0.003, 0.003)
        power = round(self.power_w(t) * noise)
        hashrate = self.hashrate_hs(t)
        mhs = hashrate / 1e6
        fraction = self.fraction(t)
        env = 25.0 + (self.index % 7)
        board_temp = env + 45 * fraction
        factory_ghs = self.rated_w / self.efficiency * 1e3
        return {
            "STATUS": self._cg_status(11, "Summary", t),
            "SUMMARY": [
                {
                    "Elapsed": int(t - self.btminer_started),
                    "MHS av": round(mhs * 0.999, 2),
                    "MHS 5s": round(mhs * noise, 2),
                    "MHS 1m": round(mhs, 2),
                    "MHS 5m": round(mhs, 2),
                    "MHS 15m": round(mhs, 2),
                    "HS RT": round(mhs, 2),
                    "Accepted": int(self.accepted),
                    "Rejected": int(self.accepted) // 500,
                    "Total MH": round(mhs * (t - self.btminer_started), 4),
                    "Temperature": round(board_temp, 2),
                    "freq_avg": int(600 * fraction),
                    # The doc: "Fan Speed In" is the air outlet fan, "Fan Speed Out" the
                    # inlet; the outlet fan, in hotter air, runs a little faster here.
                    "Fan Speed In": int(1900 + 4000 * fraction),
                    "Fan Speed Out": int(1800 + 4000 * fraction),
                    "Power": power,
                    "Power Rate": round(power / (hashrate / 1e12), 2) if hashrate else 0,
                    "Pool Rejected%": 0.0,
                    "Pool Stale%": 0.0,
                    "Last getwork": 0,
                    "Uptime": int(t - self.booted),
                    "Security Mode": 0,
                    "Hash Stable": t >= self.ramp.t1 and fraction > 0,
                    "Hash Stable Cost Seconds": int(max(0.0, self.ramp.t1 - self.ramp.t0)),
                    "Hash Deviation%": 0.1398,
                    "Target Freq": int(600 * self._freq_factor()),
                    "Target MHS": round(self.hashrate_hs(max(t, self.ramp.t1)) / 1e6),
                    "Env Temp": env,
                    "Power Mode": self.power_mode.capitalize(),
                    "Factory GHS": round(factory_ghs),
                    "Power Limit": int(self.power_limit_w or self.base_power_w),
                    "Chip Temp Min": round(board_temp - 4, 2),
                    "Chip Temp Max": round(board_temp + 17, 2),
                    "Chip Temp Avg": round(board_temp + 9, 2),
                    "Debug": "-0.0_100.0_354",
                    "Btminer Fast Boot": self.settings.get("fast_boot", "disable"),
                }
            ],
            "id": 1,
        }

    def _count_shares(self, t: float) -> None:
        elapsed = max(0.0, t - self._share_clock)
        self._share_clock = t
        self.accepted += elapsed * 0.05 * self.fraction(t)

    def _pools(self, t: float) -> dict[str, Any]:
        pools = []
        for number, pool in enumerate(self.pools, start=1):
            pools.append(
                {
                    "POOL": number,
                    "URL": pool["url"],
                    "Status": "Alive",
                    "Priority": number - 1,
                    "Quota": 1,
                    "Getworks": 1,
                    "Accepted": int(self.accepted) if number == 1 else 0,
                    "Rejected": 0,
                    "User": pool["user"],
                    "Last Share Time": int(t) - 3 if number == 1 else 0,
                    "Stratum Active": number == 1,
                    "Stratum URL": pool["url"].split("//")[-1].split(":")[0],
                    "Stratum Difficulty": 65536.0,
                    "Pool Rejected%": 0.0,
                    "Pool Stale%": 0.0,
                }
            )
        return {"STATUS": self._cg_status(7, f"{len(pools)} Pool(s)", t), "POOLS": pools, "id": 1}

    def _edevs(self, t: float) -> dict[str, Any]:
        mhs = self.hashrate_hs(t) / 1e6
        fraction = self.fraction(t)
        env = 25.0 + (self.index % 7)
        devs = []
        for slot in range(3):
            temp = env + 45 * fraction + slot
            share = mhs / 3 * (1 + (slot - 1) * 0.01)
            devs.append(
                {
                    "ASC": slot,
                    "Slot": slot,
                    "Enabled": "Y",
                    "Status": "Alive",
                    "Temperature": round(temp, 2),
                    "Chip Frequency": int(600 * fraction),
                    "MHS av": round(share, 2),
                    "MHS 5s": round(share, 2),
                    "MHS 1m": round(share, 2),
                    "MHS 5m": round(share, 2),
                    "MHS 15m": round(share, 2),
                    "HS RT": round(share, 2),
                    "HS Factory": 28836,
                    "Accepted": int(self.accepted) // 3,
                    "Rejected": 0,
                    "Last Valid Work": int(t) - 2,
                    "Upfreq Complete": int(t >= self.ramp.t1),
                    "Effective Chips": 156,
                    "PCB SN": f"HEM1EP9C4009{self.index:05d}{slot}",
                    "Chip Data": "K88Z347-2039   BINV01-195001D",
                    "Chip Temp Min": round(temp - 3, 2),
                    "Chip Temp Max": round(temp + 17, 2),
                    "Chip Temp Avg": round(temp + 9, 2),
                    "chip_vol_diff": 9,
                }
            )
        return {"STATUS": self._cg_status(9, "3 ASC(s)", t), "DEVS": devs, "id": 1}

    def _devdetails(self, t: float) -> dict[str, Any]:
        details = [
            {
                "DEVDETAILS": i,
                "Name": "SM",
                "ID": i,
                "Driver": "bitmicro",
                "Kernel": "",
                "Model": self.model_name,
            }
            for i in range(3)
        ]
        return {
            "STATUS": self._cg_status(69, "Device Details", t),
            "DEVDETAILS": details,
            "id": 1,
        }

    _CG_READS: ClassVar[dict[str, Callable[[WhatsminerModel, float], dict[str, Any]]]] = {
        "summary": _summary,
        "pools": _pools,
        "edevs": _edevs,
        "devs": _edevs,
        "devdetails": _devdetails,
    }

    # ---- v2-envelope reads

    def _envelope(self, code: int, msg: Any, t: float, status: str = "S") -> dict[str, Any]:
        description = "\n" if "newlines" in self.quirks else ""
        return {
            "STATUS": status,
            "When": int(t),
            "Code": code,
            "Msg": msg,
            "Description": description,
        }

    def _issue_token(self, ip: str, t: float) -> dict[str, str]:
        now = time.monotonic()
        for holder in list(self.tokens):
            live = [tok for tok in self.tokens[holder] if tok.expires > now]
            if live:
                self.tokens[holder] = live
            else:
                del self.tokens[holder]
        held = self.tokens.get(ip)
        if held is None and len(self.tokens) >= self.max_client_ips:
            raise RefusalError(136, "token over max times")
        if held is not None and len(held) >= self.max_tokens_per_ip:
            raise RefusalError(136, "token over max times")
        epoch = str(int(t))
        newsalt = self._new_salt()
        sign = crypto.sign_token(self.key, epoch, newsalt)
        self.tokens.setdefault(ip, []).append(_Token(sign, now + self.token_life))
        self.tokens_issued += 1
        shown = epoch if "epoch_time" in self.quirks else epoch[-4:]
        return {"time": shown, "salt": self.salt, "newsalt": newsalt}

    def _psu(self, t: float) -> dict[str, str]:
        power = self.power_w(t)
        return {
            "name": "P221B",
            "hw_version": "V01.00",
            "sw_version": "V01.00.V01.03",
            "model": "P221B",
            "iin": str(round(power / 224.0 * self.psu_iin_per_amp)),
            "vin": str(round(224.0 * self.psu_vin_per_volt)),
            "fan_speed": str(int(3000 + 4000 * self.fraction(t))),
            "version": "-1",
            "serial_no": f"A1232B01201{self.index:05d}",
            "vendor": "7",
            "temp0": str(round(30 + 10 * self.fraction(t), 1)),
        }

    def _version(self) -> dict[str, str]:
        return {
            "api_ver": "2.0.5",
            "fw_ver": self.firmware_version,
            "platform": "H6OS",
            "chip": "K88Z001-2039  BINV01-195001B",
        }

    def _status(self, t: float) -> dict[str, Any]:
        off_key = "mineroff" if "mineroff" in self.quirks else "btmineroff"
        msg = {
            off_key: "false" if self.mining else "true",
            "Firmware Version": f"'{self.firmware_version}'",
            "power_mode": self.power_mode.capitalize(),
            "hash_percent": str(int(100 * self._freq_factor())),
        }
        return msg if "bare_status" in self.quirks else self._envelope(131, msg, t)

    def _miner_info(self, wanted: Any) -> dict[str, str]:
        info = {
            "ip": self.network.get("ip", ""),
            "proto": self.network.get("proto", "dhcp"),
            "netmask": self.network.get("mask", "255.255.255.0"),
            "gateway": self.network.get("gate", "10.0.0.1"),
            "dns": self.network.get("dns", "10.0.0.1"),
            "hostname": self.hostname,
            "mac": f"C6:07:20:00:{self.index // 256 % 256:02X}:{self.index % 256:02X}",
            "ledstat": self.led,
            "minersn": f"SIM{self.index:08d}",
            "powersn": f"A1232B01201{self.index:05d}",
        }
        fields = [f.strip() for f in str(wanted).split(",") if f.strip()]
        return {k: v for k, v in info.items() if k in fields} if fields else info

    # ---- rendering (where the quirks live)

    def _render(self, body: dict[str, Any]) -> bytes:
        if "newlines" in self.quirks:
            text = json.dumps(body, indent=1).replace("\\n", "\n")
        else:
            text = json.dumps(body, separators=(",", ":"))
        if "trailing_comma" in self.quirks:
            text = _TRAILING.sub(r"\1,}", text)
        return self._finish(text)

    def _finish(self, text: str) -> bytes:
        data = text.encode()
        return data + b"\x00" if "nul" in self.quirks else data

    def _render_psu(self, body: dict[str, Any]) -> bytes:
        data = self._render(body)
        if "missing_comma" in self.quirks:
            data = re.sub(rb'"(\s*),(\s*)"temp0"', rb'"\1\2"temp0"', data)
        return data

    def _render_error_codes(self, t: float) -> bytes:
        codes = dict(self.error_codes)
        value: Any = codes
        if "error_code_objects" in self.quirks:
            value = [{code: when} for code, when in codes.items()]
        text = json.dumps(self._envelope(131, {"error_code": value}, t), separators=(",", ":"))
        if "error_code_dict_list" in self.quirks:
            text = _ERROR_DICT.sub(r'"error_code":[\1]', text)
        if "truncate" in self.quirks:
            text = text[: self.truncate_at]
        return self._finish(text)

    def _plain_error(self, code: int, msg: str) -> Reply:
        self.errors_sent[code] += 1
        body = self._envelope(code, msg, self.now(), status="E")
        return Reply(self._finish(json.dumps(body, separators=(",", ":"))))

    # ---------------------------------------------------------------- writes

    def _encrypted(self, request: dict[str, Any], ip: str) -> Reply:
        if not self.write_api:
            return self._plain_error(45, "can't access write cmd")
        data = request.get("data")
        if not isinstance(data, str):
            return self._plain_error(23, "invalid JSON message")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return self._plain_error(137, "base64 decode error")
        if not raw or len(raw) % 16:
            return self._plain_error(137, "base64 decode error")
        plain = AES.new(self.aeskey, AES.MODE_ECB).decrypt(raw).rstrip(b"\0")
        try:
            command = json.loads(plain)
        except (ValueError, UnicodeDecodeError):
            # Another password's key decrypts to noise: no token can be found in it.
            return self._plain_error(135, "check token error")
        if not isinstance(command, dict) or not self._token_valid(ip, command.get("token")):
            return self._plain_error(135, "check token error")
        name = command.get("cmd")
        t = self.now()
        aeskey = self.aeskey  # update_pwd answers with the key it was asked with
        try:
            handler = self._WRITES.get(name) if isinstance(name, str) else None
            if handler is None or name in self.unsupported:
                raise RefusalError(14, "invalid API command or data")
            msg, then = handler(self, command, t)
        except RefusalError as refusal:
            self.writes.append(WriteRecord(time.monotonic(), t, str(name), refusal.code, ip))
            return self._plain_error(refusal.code, refusal.msg)
        self.writes.append(WriteRecord(time.monotonic(), t, str(name), 131, ip))
        reply = json.dumps(self._envelope(131, msg, t), separators=(",", ":")).encode()
        wrapped = json.dumps({"enc": crypto.encrypt(reply, aeskey)}).encode()
        return Reply(wrapped, then)

    def _token_valid(self, ip: str, sign: Any) -> bool:
        now = time.monotonic()
        return any(tok.sign == sign and tok.expires > now for tok in self.tokens.get(ip, ()))

    # Each write handler: (model, decrypted command, sim time) → (Msg, followup or None).

    def _w_update_pools(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        pools = []
        for n in (1, 2, 3):
            url, user = cmd.get(f"pool{n}"), cmd.get(f"worker{n}")
            if isinstance(url, str) and url:
                pools.append({"url": url, "user": user if isinstance(user, str) else ""})
        if not pools:
            raise RefusalError(14, "invalid API command or data")
        self.pools = pools
        return "ok", None

    def _w_restart_btminer(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        self._restart_btminer(t)
        return "ok", None

    def _w_power_off(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        self.mining = False
        self.preheat_started = None
        self.ramp = Ramp(0.0, 0.0, t, t)
        return "ok", None

    def _w_power_on(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        if not self.mining:
            settle = PREHEATED_START_S if self._preheat_done(t) else COLD_START_S
            if self.power_on_percent == "reset":
                self.target_fraction = 1.0
                self.exponent = NORMAL_EXPONENT
            self.mining = True
            self.preheat_started = None
            self.btminer_started = t
            self.restart_until = t - 1
            self.ramp = Ramp(0.0, self.target_fraction, t, t + settle)
        return "ok", None

    def _w_set_led(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        if cmd.get("param") == "auto":
            self.led = "auto"
            return "ok", None
        if cmd.get("color") not in ("red", "green"):
            raise RefusalError(14, "invalid API command or data")
        for name in ("period", "duration", "start"):
            if self.led_fields == "integer" and not _is_integer(cmd.get(name)):
                raise RefusalError(14, "invalid API command or data")
            _number(cmd, name, 0, 1_000_000)
        self.led = str(cmd["color"])
        return "ok", None

    def _power_mode(self, mode: str, t: float) -> tuple[Any, Followup | None]:
        if mode != self.power_mode:
            self.power_mode = mode
            self._restart_btminer(t)
        return "ok", None

    def _w_set_low_power(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._power_mode("low", t)

    def _w_set_normal_power(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._power_mode("normal", t)

    def _w_set_high_power(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._power_mode("high", t)

    def _w_firmware(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        if cmd.get("cmd") != self.firmware_command:
            raise RefusalError(14, "invalid API command or data")
        return "ready", self._receive_firmware

    async def _receive_firmware(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await writer.drain()
        async with asyncio.timeout(self.idle_timeout):
            size = struct.unpack("<I", await reader.readexactly(4))[0]
            remaining = size
            while remaining:
                chunk = await reader.read(min(remaining, 1 << 16))
                if not chunk:
                    return
                remaining -= len(chunk)
        self.firmware_uploads.append(size)
        self.firmware_version = f"{self.firmware_version.split('-')[0]}-upgraded"
        self._reboot(self.now())

    def _w_reboot(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        self._reboot(t)
        return "ok", None

    def _reboot(self, t: float) -> None:
        self.reboots += 1
        self.reboot_until = t + REBOOT_S
        self.booted = self.btminer_started = t + REBOOT_S
        self.tokens.clear()
        if self.mining:
            self.restart_until = t + REBOOT_S + RESTART_S
            start = self.restart_until
            self.ramp = Ramp(0.0, self.target_fraction, start, start + WARMUP_S)

    def _w_factory_reset(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        self.password = DEFAULT_PASSWORD
        self.salt = self._new_salt()
        self._set_key()
        self.write_api = False
        self.pools = []
        self.power_mode = "normal"
        self.power_limit_w = 0.0
        self.target_freq_percent = 0
        self.target_fraction = 1.0
        self.settings.clear()
        self._reboot(t)
        return "ok", None

    def _w_update_pwd(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        new = cmd.get("new")
        if cmd.get("old") != self.password:
            raise RefusalError(132, "old password error")
        if not isinstance(new, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,8}", new):
            raise RefusalError(14, "invalid API command or data")
        self.password = new
        self.salt = self._new_salt()
        self._set_key()
        self.tokens.clear()
        return "ok", None

    def _w_net_config(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        if cmd.get("param") == "dhcp":
            self.network = {"proto": "dhcp", "ip": self.network.get("ip", "")}
        else:
            fields = ("ip", "mask", "gate", "dns", "host")
            if not all(isinstance(cmd.get(f), str) and cmd[f] for f in fields):
                raise RefusalError(14, "invalid API command or data")
            self.network = {"proto": "static", **{f: cmd[f] for f in fields}}
            self.hostname = cmd["host"]
        self._reboot(t)
        return "ok", None

    def _w_download_logs(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        self.log_downloads += 1
        log = self._log_text()
        return {"logfilelen": str(len(log))}, self._sender(log)

    def _log_text(self) -> bytes:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} btminer[{self.index}]: sim log line\n"
        lines = (line * (self.log_size // len(line) + 1)).encode()
        return lines[: self.log_size]

    def _sender(self, payload: bytes) -> Followup:
        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await writer.drain()
            await asyncio.sleep(0.01)  # the doc: file contents follow after a 10 ms delay
            writer.write(payload)

        return send

    def _w_set_target_freq(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        percent = _number(cmd, "percent", -100, 100)
        if percent > 0 and self.cooling == "air":
            raise RefusalError(132, "fan-cooled miners only support underclocking")
        self.target_freq_percent = int(percent)
        self._restart_btminer(t)
        return "ok", None

    def _setting(self, name: str, value: Any) -> tuple[Any, Followup | None]:
        self.settings[name] = value
        return "ok", None

    def _w_enable_fast_boot(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("fast_boot", "enable")

    def _w_disable_fast_boot(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("fast_boot", "disable")

    def _w_enable_web_pools(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("web_pools", True)

    def _w_disable_web_pools(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("web_pools", False)

    def _w_set_hostname(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        hostname = cmd.get("hostname")
        if not isinstance(hostname, str) or not hostname:
            raise RefusalError(14, "invalid API command or data")
        self.hostname = hostname
        return "ok", None

    def _w_set_zone(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        zone, name = cmd.get("timezone"), cmd.get("zonename")
        if not (isinstance(zone, str) and zone and isinstance(name, str) and name):
            raise RefusalError(14, "invalid API command or data")
        return self._setting("zone", (zone, name))

    def _w_load_log(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        port = _number(cmd, "port", 1, 65535)
        if cmd.get("proto") not in ("tcp", "udp") or not cmd.get("ip"):
            raise RefusalError(14, "invalid API command or data")
        return self._setting("log_server", (cmd["ip"], int(port), cmd["proto"]))

    def _w_set_power_pct(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        self._aim(_number(cmd, "percent", 0, 100), True, t)
        return "ok", None

    def _w_set_power_pct_v2(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        percent = _number(cmd, "percent", 0, 100)
        if self.cooling == "air" and self.power_mode == "high":
            raise RefusalError(132, "set_power_pct_v2 needs normal or low power mode")
        self._aim(percent, False, t)
        return "ok", None

    def _w_pre_power_on(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        if self.mining:
            raise RefusalError(132, "power_off btminer before pre_power_on")
        if self.preheat_started is None:
            self.preheat_started = t
            return {"complete": False, "msg": "wait for adjust temp"}, None
        if self._preheat_done(t):
            return {"complete": True, "msg": "adjust complete"}, None
        return {"complete": False, "msg": "adjust continue"}, None

    def _w_set_temp_offset(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("temp_offset", int(_number(cmd, "temp_offset", -30, 0)))

    def _w_adjust_power_limit(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        limit = _number(cmd, "power_limit", 0, 99999)
        before = self.base_power_w
        self.power_limit_w = limit
        if self.base_power_w != before:
            self._restart_btminer(t)
        return "ok", None

    def _w_adjust_upfreq(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("upfreq_speed", int(_number(cmd, "upfreq_speed", 0, 9)))

    def _w_poweroff_cool(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("poweroff_cool", _flag(cmd, "poweroff_cool"))

    def _w_fan_zero_speed(self, cmd: dict[str, Any], t: float) -> tuple[Any, Followup | None]:
        return self._setting("fan_zero_speed", _flag(cmd, "fan_zero_speed"))

    _WRITES: ClassVar[dict[str, WriteHandler]] = {
        "update_pools": _w_update_pools,
        "restart_btminer": _w_restart_btminer,
        "power_off": _w_power_off,
        "power_on": _w_power_on,
        "set_led": _w_set_led,
        "set_low_power": _w_set_low_power,
        "set_normal_power": _w_set_normal_power,
        "set_high_power": _w_set_high_power,
        "update_firmware": _w_firmware,
        "upgrade_firmware": _w_firmware,
        "reboot": _w_reboot,
        "factory_reset": _w_factory_reset,
        "update_pwd": _w_update_pwd,
        "net_config": _w_net_config,
        "download_logs": _w_download_logs,
        "set_target_freq": _w_set_target_freq,
        "enable_btminer_fast_boot": _w_enable_fast_boot,
        "disable_btminer_fast_boot": _w_disable_fast_boot,
        "enable_web_pools": _w_enable_web_pools,
        "disable_web_pools": _w_disable_web_pools,
        "set_hostname": _w_set_hostname,
        "set_zone": _w_set_zone,
        "load_log": _w_load_log,
        "set_power_pct": _w_set_power_pct,
        "set_power_pct_v2": _w_set_power_pct_v2,
        "pre_power_on": _w_pre_power_on,
        "set_temp_offset": _w_set_temp_offset,
        "adjust_power_limit": _w_adjust_power_limit,
        "adjust_upfreq_speed": _w_adjust_upfreq,
        "set_poweroff_cool": _w_poweroff_cool,
        "set_fan_zero_speed": _w_fan_zero_speed,
    }

    # ------------------------------------------------------------ sockets

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: one request, one reply, then close (as btminer does)."""
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.idle_timeout):
            data = await _read_request(reader)
        if not data or self.now() < self.reboot_until:
            return  # rebooting: the request is read and dropped, nothing answers
        if self.fault is not None:
            await self._misbehave(writer)
            return
        peer = writer.get_extra_info("peername")
        reply = self.handle(data, peer[0] if peer else "?")
        writer.write(reply.body)
        if reply.then is not None:
            await reply.then(reader, writer)
        await writer.drain()

    async def _misbehave(self, writer: asyncio.StreamWriter) -> None:
        if self.fault == "hang":
            await asyncio.sleep(self.idle_timeout)
        elif self.fault == "garbage":
            writer.write(b"\x15\x03\x01\x00\x02\x02\x0a<html>busy</html>")
        elif self.fault == "stall":
            writer.write(b'{"STATUS":[{"STATUS":"S","Msg":"Summary"}],"SUMMARY":[{"Elapsed"')
            await writer.drain()
            await asyncio.sleep(self.idle_timeout)
        # "close": nothing at all


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Bytes up to the end of the first JSON object (requests carry no terminator)."""
    buffer = b""
    while len(buffer) < MAX_REQUEST:
        chunk = await reader.read(65536)
        if not chunk:
            return buffer
        buffer += chunk
        end = _request_end(buffer)
        if end is not None:
            return buffer[:end]
    return buffer


def _request_end(buffer: bytes) -> int | None:
    """Where the first top-level JSON value ends (anything not JSON ends at its first byte)."""
    depth = 0
    in_string = escaped = False
    for index, byte in enumerate(buffer):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if depth <= 0:
                return index + 1
        elif depth == 0 and byte not in b" \t\r\n\x00":
            return index + 1
    return None


def _check_choice(name: str, value: str, known: Any) -> None:
    if value not in known:
        raise ValueError(f"unknown {name} {value!r}; known: {sorted(known)}")


def _is_integer(value: Any) -> bool:
    """A JSON integer, as the doc types set_led's numbers (not a string, not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(cmd: dict[str, Any], name: str, low: float, high: float) -> float:
    """A numeric parameter (sent as text, per the doc) within the doc's inclusive range."""
    value = cmd.get(name)
    try:
        number = float(value) if isinstance(value, str | int | float) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise RefusalError(14, "invalid API command or data")
    return number


def _flag(cmd: dict[str, Any], name: str) -> bool:
    value = str(cmd.get(name))
    if value not in ("0", "1"):
        raise RefusalError(14, "invalid API command or data")
    return value == "1"


async def start_fleet(
    count: int, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> SimFleet:
    """`count` miners on consecutive ports from `port` (0: free ports), one shared clock.

    Options go to every WhatsminerModel (password, quirks, time_scale, token_life …); each
    miner's own efficiency, power and landing error come from its index.
    """
    raise_open_file_limit()
    clock = options.pop("clock", None) or SimClock(options.get("time_scale", 1.0))
    tasks: set[asyncio.Task[None]] = set()
    servers: list[asyncio.Server] = []
    devices = []
    for index in range(count):
        model = WhatsminerModel(index=index, clock=clock, **options)
        server = await asyncio.start_server(
            _tracked(model, tasks), host, port + index if port else 0, reuse_address=True
        )
        servers.append(server)
        bound = server.sockets[0].getsockname()[1]
        devices.append(SimDevice(host=host, port=bound, model=model))

    async def close() -> None:
        for server in servers:
            server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    return SimFleet(kind="whatsminer", devices=devices, closers=[close])


@contextlib.asynccontextmanager
async def running(count: int = 1, **options: Any) -> AsyncIterator[SimFleet]:
    """`start_fleet` for `async with`: the fleet is closed however the block ends."""
    fleet = await start_fleet(count, **options)
    try:
        yield fleet
    finally:
        await fleet.close()


def _tracked(
    model: WhatsminerModel, tasks: set[asyncio.Task[None]]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """The connection handler, remembering its task so that closing the fleet can end it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await model.serve(reader, writer)
        finally:
            if task is not None:
                tasks.discard(task)

    return handler


def demo_config(device: SimDevice, index: int) -> dict[str, Any]:
    """The `[[devices]]` entry the demo uses for this simulated miner."""
    return {
        "id": f"whatsminer-{index + 1}",
        "kind": "whatsminer",
        "name": f"Whatsminer {index + 1}",
        "host": device.host,
        "port": device.port,
        "password": device.model.password,
        "poll_interval": "10s",
    }


def token_count(fleet: SimFleet) -> int:
    """Tokens the whole fleet has issued (the bench's and the tests' token budget)."""
    return sum(device.model.tokens_issued for device in fleet.devices)
