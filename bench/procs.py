"""The processes of a bench run: Mosquitto, simulator processes, the agent, with CPU and memory
sampled by psutil from outside."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

REPO = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "hook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 1000000\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
        )
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(lambda: port_open(self.port), 10, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class SimProcess:
    """One `python -m bench.simproc` process, driven by line commands on its stdin."""

    def __init__(self, kind: str, first: int, count: int, log: Path) -> None:
        self.kind = kind
        self._log = log.open("ab")
        command = [sys.executable, "-m", "bench.simproc", kind]
        self.process = subprocess.Popen(
            [*command, "--first", str(first), "--count", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=python_env(),
            cwd=REPO,
        )
        self.devices: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def wait_ready(self, timeout: float = 300) -> list[dict[str, Any]]:
        reply = self._read(timeout)
        if not reply.get("ready"):
            raise RuntimeError(f"{self.kind} simulator did not start: {reply}")
        self.devices = reply["devices"]
        return self.devices

    def ask(self, command: str, timeout: float = 60) -> dict[str, Any]:
        with self._lock:
            stdin = self._pipe(self.process.stdin)
            stdin.write(command.encode() + b"\n")
            stdin.flush()
            return self._read(timeout)

    def _read(self, timeout: float) -> dict[str, Any]:
        stdout = self._pipe(self.process.stdout)
        line = _readline_within(stdout, timeout)
        if not line:
            raise RuntimeError(f"{self.kind} simulator exited (code {self.process.poll()})")
        result: dict[str, Any] = json.loads(line)
        return result

    @staticmethod
    def _pipe(pipe: IO[bytes] | None) -> IO[bytes]:
        if pipe is None:
            raise RuntimeError("simulator pipes are gone")
        return pipe

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin:
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def _readline_within(stream: IO[bytes], timeout: float) -> bytes:
    found: list[bytes] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise TimeoutError(f"no reply within {timeout:g}s")
    return found[0]


@dataclass
class Sample:
    t: float
    cpu_s: float
    rss: int
    user_s: float = 0.0
    system_s: float = 0.0


@dataclass
class Sampled:
    """A process watched by psutil: CPU seconds (user + system) and RSS over time."""

    pid: int
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.pid)

    def sample(self) -> Sample | None:
        try:
            with self.process.oneshot():
                times = self.process.cpu_times()
                rss = self.process.memory_info().rss
        except psutil.Error:
            return None
        sample = Sample(time.monotonic(), times.user + times.system, rss, times.user, times.system)
        self.samples.append(sample)
        return sample

    def peak_rss(self) -> int | None:
        """VmHWM: the kernel's own high-water mark of the resident set."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return max((s.rss for s in self.samples), default=None)
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None


class Sampler:
    """Samples the watched processes and the whole machine's CPU every `period` seconds."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self.watched: dict[str, Sampled] = {}
        self.machine: list[tuple[float, float]] = []  # (time, busy % of all cores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def watch(self, name: str, pid: int) -> Sampled:
        sampled = Sampled(pid)
        sampled.sample()
        self.watched[name] = sampled
        return sampled

    def forget(self, name: str) -> None:
        self.watched.pop(name, None)

    def start(self) -> None:
        psutil.cpu_percent()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.machine.append((time.monotonic(), psutil.cpu_percent()))
            for sampled in list(self.watched.values()):
                sampled.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


class AgentProcess:
    """`python -m agent run -c CONFIG`, with the bench hook on PYTHONPATH."""

    def __init__(
        self, config: Path, log: Path, *, hook: bool = True, memory_dump: Path | None = None
    ) -> None:
        extra = {"EDGE_AGENT_BENCH_HOOK": "1"} if hook else {}
        self.memory_dump = memory_dump
        if memory_dump is not None:
            extra["EDGE_AGENT_BENCH_TRACEMALLOC"] = str(memory_dump)
        env = python_env(**extra)
        if hook:
            env["PYTHONPATH"] = os.pathsep.join([str(HOOK), env["PYTHONPATH"]])
        self._log = log.open("ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def memory_top(self, timeout: float = 300) -> Any:
        """Ask the traced agent for its top allocations (SIGUSR2) and wait for the file."""
        if self.memory_dump is None or not self.alive():
            return None
        self.memory_dump.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR2)
        wait_until(self.memory_dump.exists, timeout, "the agent's memory dump")
        time.sleep(0.5)  # written in one go, but let it finish
        return json.loads(self.memory_dump.read_text())

    def stop(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode
