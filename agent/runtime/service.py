"""The running agent and its composition root: MQTT session, device workers, discovery,
bridge topics, site power control, reloads.

Data flows one way: a worker polls, normalises and hands the state to the publisher; a message
on a command topic goes through the command service (validated against the kind's catalog,
run by that device's worker) and is answered with exactly one result. Every collaborator is
built here and gets only what it uses.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent import __version__
from agent.catalog.discovery import DiscoveryContext
from agent.catalog.topics import Topics
from agent.config.base import DeviceConfig
from agent.config.settings import ConfigError, LoadedConfig, Settings, load_config
from agent.devices.kind import DeviceKind
from agent.kinds import KINDS
from agent.logs import get_logger, register_secrets
from agent.power.controller import PowerController
from agent.runtime.announcer import CLEAR_STATE_AFTER_S, Announcer
from agent.runtime.bridge import BridgeRequests, bridge_entities, power_entities
from agent.runtime.collector import HeapSettler
from agent.runtime.commands import CommandService, WorkerCommands
from agent.runtime.energy import EnergyBook, metered, site_entity, state_directory
from agent.runtime.inbound import InboundDispatcher
from agent.runtime.mqtt import Inbound, MqttLink
from agent.runtime.power_port import AgentPowerPort
from agent.runtime.publisher import Publisher
from agent.runtime.sweeper import StaleDeviceSweeper
from agent.runtime.systemd import Notifier
from agent.runtime.worker import DeviceWorker

log = get_logger("agent")
SWEEP_WINDOW_S = 10.0  # how long after the first connect retained leftovers are collected


class AgentService:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        notifier: Notifier | None = None,
        kinds: Mapping[str, DeviceKind] = KINDS,
        settler: HeapSettler | None = None,
    ) -> None:
        self.loaded = loaded
        self.settler = settler  # the process's collector policy: given only by `run`
        self.kinds = kinds  # the kinds its config was validated against; a reload uses them too
        self.settings: Settings = loaded.settings
        self.config_path: Path | None = loaded.path
        self.notifier = notifier or Notifier()
        self.topics = Topics(self.settings.mqtt.base_topic, self.settings.agent.id)
        self.workers: dict[str, DeviceWorker] = {}
        self.started = time.monotonic()
        self.stopping = asyncio.Event()
        self.running = threading.Event()  # set once workers exist: for embedding and tests
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._info_pending = False
        register_secrets(self.settings.secret_values())
        ha = self.settings.homeassistant
        self.ctx = DiscoveryContext(ha.discovery_prefix, self.topics.base, self.settings.agent.id)
        self.link = MqttLink(
            self.settings.mqtt,
            client_id=self.settings.mqtt.client_id or f"edge-agent-{self.settings.agent.id}",
            will_topic=self.topics.bridge_state,
            on_message=self._from_network_thread,
            on_connected=self._connected_from_network_thread,
            on_disconnected=self._disconnected_from_network_thread,
        )
        self.announcer = Announcer(
            self.ctx,
            lambda topic, payload: self.link.publish_retained(topic, payload, keep=False),
            self.link.clear_retained,
            enabled=ha.enabled,
            backlog=self.link.retained_backlog,
        )
        self.publisher = Publisher(
            self.link,
            self.topics,
            self.announcer,
            availability_changed=self.publish_info_soon,
            audit_enabled=lambda: self.settings.agent.audit_topic,
        )
        self.commands = WorkerCommands(
            CommandService(self.publisher.publish_audit),
            self.publisher,
            self.topics,
            lambda: self.settings.agent.command_timeout,
        )
        self.energy = EnergyBook(
            state_directory(self.settings.agent.state_directory),
            members=self._site_members(self.settings),
            on_saved=self.publish_site_energy,
        )
        self.sweeper = StaleDeviceSweeper(
            self.link, self.topics, ha.discovery_prefix, lambda: set(self.workers)
        )
        self.inbound = InboundDispatcher(
            self.topics,
            ha_status_topic=lambda: self.settings.homeassistant.status_topic,
            claimed=self.sweeper.handle,
            workers=self.workers,
            commands=self.commands,
            requests=BridgeRequests(
                self.publisher,
                self.topics,
                self.workers,
                summary=self.device_summary,
                health=lambda: self.health(),  # late-bound: the bench hook wraps health
                reload=self.reload,
            ),
            publisher=self.publisher,
            spawn=self.spawn,
            ha_online=self._ha_online,
            unsubscribe=self.link.unsubscribe,
        )
        self.power: PowerController | None = None
        self._announced_max_w: int | None = None

    # lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_default_executor(
            ThreadPoolExecutor(self.settings.agent.workers, thread_name_prefix="device-io")
        )
        self.link.subscribe(*self.topics.subscriptions(self.settings.homeassistant.status_topic))
        self.sweeper.start()
        self.publisher.publish_bridge_state(True)
        for device in self.settings.devices:
            self._add_worker(device)
        self.start_power()
        self.publish_site_energy()
        self.publish_info()
        self.announce_bridge()
        self.link.start()
        self.notifier.ready(f"{len(self.workers)} devices")
        self.running.set()
        self._settle_heap()
        log.info("agent started", agent=self.settings.agent.id, devices=len(self.workers))
        watchdog = self.spawn(self._watchdog())
        await self.stopping.wait()
        watchdog.cancel()
        await self._shutdown()

    def _settle_heap(self) -> None:
        if self.settler is not None:
            intervals = [w.config.poll_interval for w in self.workers.values()]
            self.settler.settle_after(HeapSettler.settle_delay(intervals), self._fleet_polled)

    def _fleet_polled(self) -> bool:
        return all(w.tried for w in self.workers.values())

    def request_stop(self) -> None:
        self.stopping.set()

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("agent stopping")
        if self.settler is not None:
            self.settler.cancel()
        if self.power is not None:
            await self.power.close()
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        self.energy.save()
        final = {self.topics.availability(d): b"offline" for d in self.workers}
        final[self.topics.bridge_state] = b"offline"
        await asyncio.to_thread(self.link.stop, final)
        for task in list(self._tasks):
            task.cancel()
        log.info("agent stopped")

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:  # pets only while the event loop turns: a stuck loop gets restarted
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # workers ---------------------------------------------------------------------------

    def new_worker(self, device: DeviceConfig) -> DeviceWorker:
        """The device's worker under this agent's settings, not yet registered or started."""
        agent = self.settings.agent
        kind = self.kinds[device.kind]
        return DeviceWorker(
            device,
            kind,
            self.publisher,
            offline_after=agent.offline_after,
            state_refresh=agent.state_refresh,
            jitter=agent.jitter,
            alignment=agent.poll_alignment,
            energy=self.energy if metered(kind.catalog) else None,
        )

    def _add_worker(self, device: DeviceConfig, last_state: dict[str, Any] | None = None) -> None:
        if not device.enabled:
            return
        worker = self.new_worker(device)
        self.workers[device.id] = worker
        self.publisher.forget(device.id)
        worker.state = last_state
        if last_state is not None:  # otherwise its first poll announces it, with what it read
            self.announcer.announce_device(device, worker.kind.catalog, last_state)
        worker.start()

    async def _remove_worker(self, device_id: str) -> None:
        worker = self.workers.pop(device_id)
        await worker.stop()
        self.publisher.forget(device_id)
        self.announcer.forget_device(device_id)
        assert self.loop is not None
        self.loop.call_later(CLEAR_STATE_AFTER_S, self._clear_device_topics, device_id)

    def _clear_device_topics(self, device_id: str) -> None:
        if device_id in self.workers:
            return  # added back meanwhile: its topics are live again
        self.publisher.clear_device(device_id)

    # bridge ----------------------------------------------------------------------------

    def publish_info_soon(self) -> None:
        """Availability flips come in bursts (a switch dies): one info publish per second."""
        if self._info_pending or self.loop is None:
            return
        self._info_pending = True
        self.loop.call_later(1.0, self._publish_info_now)

    def _publish_info_now(self) -> None:
        self._info_pending = False
        self.publish_info()

    def publish_site_energy(self) -> None:
        if self.settings.power.enabled:
            self.publisher.publish_site_energy(self.energy.site_state())

    @staticmethod
    def _site_members(settings: Settings) -> list[str]:
        return list(settings.power.members) if settings.power.enabled else []

    def publish_info(self) -> None:
        self.publisher.publish_info(self.info())

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "version": __version__,
            "agent_id": s.agent.id,
            "uptime_s": round(time.monotonic() - self.started),
            "mqtt": {
                "broker": f"{s.mqtt.host}:{s.mqtt.port}",
                "tls": s.mqtt.tls,
                "protocol": s.mqtt.protocol,
                "base_topic": s.mqtt.base_topic,
            },
            "homeassistant": s.homeassistant.model_dump(),
            "devices": [self.device_summary(w) for w in self.workers.values()],
            "power": {"enabled": s.power.enabled, "members": s.power.members},
        }

    def device_summary(self, worker: DeviceWorker) -> dict[str, Any]:
        status = {True: "online", False: "offline", None: "unknown"}[worker.available]
        return {
            "id": worker.id,
            "kind": worker.config.kind,
            "name": worker.config.display_name,
            "status": status,
        }

    def health(self) -> dict[str, Any]:
        online = sum(1 for w in self.workers.values() if w.available)
        offline = sum(1 for w in self.workers.values() if w.available is False)
        mqtt_ok = self.link.connected.is_set()
        return {
            "status": "ok" if mqtt_ok and offline == 0 else "degraded",
            "uptime_s": round(time.monotonic() - self.started),
            "mqtt_connected": mqtt_ok,
            "mqtt_connects": self.link.connects,
            "mqtt_denied": self.link.denied,  # publishes/subscriptions the broker's ACL refused
            "devices": len(self.workers),
            "devices_online": online,
            "devices_offline": offline,
            "polls_ok": sum(w.stats.ok for w in self.workers.values()),
            "polls_failed": sum(w.stats.failed for w in self.workers.values()),
            "missed_cycles": sum(w.stats.missed_cycles for w in self.workers.values()),
        }

    # reload ----------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; add, remove and restart devices without dropping MQTT."""
        self.notifier.reloading()
        try:
            loaded = await asyncio.to_thread(load_config, self.config_path, kinds=self.kinds)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: config invalid", problem=problem)
            self.notifier.ready("reload refused: config invalid")
            raise
        if self.settler is not None:
            self.settler.thaw()
        changes = await self._apply(loaded.settings)
        self._settle_heap()
        for warning in loaded.warnings:
            log.warning("config", warning=warning)
        self.publish_info()
        self.notifier.ready(f"{len(self.workers)} devices")
        log.info("config reloaded", **changes)
        return changes

    async def _apply(self, new: Settings) -> dict[str, list[str]]:
        if new.mqtt != self.settings.mqtt or new.agent.id != self.settings.agent.id:
            log.warning("mqtt and agent.id changes take effect after a restart")
            new = new.model_copy(update={"mqtt": self.settings.mqtt, "agent": self.settings.agent})
        register_secrets(new.secret_values())
        old = {d.id: d for d in self.settings.devices if d.enabled}
        fresh = {d.id: d for d in new.devices if d.enabled}
        removed = [i for i in old if i not in fresh]
        changed = [i for i in fresh if i in old and fresh[i] != old[i]]
        added = [i for i in fresh if i not in old]
        self.settings = new
        self.energy.members = self._site_members(new)
        for device_id in removed:
            await self._remove_worker(device_id)
        for device_id in changed:
            # Same id: keep its topics and discovery; the announcer's diff clears only what
            # the new config no longer has, and the last state keeps dynamic entities alive.
            old_worker = self.workers.pop(device_id)
            await old_worker.stop()
            self._add_worker(fresh[device_id], last_state=old_worker.state)
        for device_id in added:
            self._add_worker(fresh[device_id])
        if self.power is not None:
            self.power.reconfigure(self.settings.power)
        else:
            self.start_power()
        self.announce_bridge()
        return {"added": added, "removed": removed, "changed": changed}

    # inbound ---------------------------------------------------------------------------

    def _from_network_thread(self, message: Inbound) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.inbound.dispatch, message)

    def _connected_from_network_thread(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._connected)

    def _disconnected_from_network_thread(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._mqtt_lost)

    def _mqtt_lost(self) -> None:
        if self.power is not None:
            self.power.mqtt_lost()

    def _connected(self) -> None:
        if self.link.connects == 1 and self.loop is not None:
            self.loop.call_later(SWEEP_WINDOW_S, self.sweeper.finish)
        for worker in self.workers.values():  # the link keeps no states: a new broker has none
            self.publisher.resend_published(worker)
        self._reannounce()

    def _reannounce(self) -> None:
        """After a (re)connect or a Home Assistant restart: discovery, then current states.
        The announcer paces the configs behind polling; a device not polled yet is announced
        by its first poll, so that its configs go out once, with what it read."""
        self.announcer.reset()
        self.announce_bridge()
        for worker in self.workers.values():
            if worker.tried:
                self.announcer.announce_device(worker.config, worker.kind.catalog, worker.state)

    def _ha_online(self) -> None:
        """Home Assistant restarted: discovery again, then every current state."""
        self._reannounce()
        if self.loop is not None:
            self.loop.call_later(min(3.0, 0.5 + 0.002 * len(self.workers)), self.republish_states)

    def republish_states(self) -> None:
        for worker in self.workers.values():
            self.publisher.republish_state(worker)

    # site power control and the bridge device -------------------------------------------

    def start_power(self) -> None:
        if not self.settings.power.enabled or self.power is not None:
            return
        port = AgentPowerPort(
            self.workers, self.commands.execute_internal, self.spawn, self._power_state
        )
        self.power = self.inbound.power = PowerController(self.settings.power, port)
        self.link.subscribe(self.topics.power)
        self.power.start()

    def _power_state(self, payload: bytes) -> None:
        """The controller's retained state; the site target's range in Home Assistant follows
        the fleet maximum it learned (before that its maximum is a placeholder)."""
        self.publisher.publish_power_state(payload)
        if self.power is None:
            return
        maximum = round(self.power.fleet_max_w())
        if maximum != self._announced_max_w:
            self._announced_max_w = maximum
            self.announce_bridge()

    def announce_bridge(self) -> None:
        entities = bridge_entities(self.topics)
        if self.power is not None:
            members = list(self.settings.power.members)
            entities += power_entities(self.topics, members, self.power.fleet_max_w())
            entities.append(site_entity(self.topics.energy))
        self.announcer.announce_bridge(entities)
