"""What the exporter knows about one unit, folded from systemd's property changes.

Pure bookkeeping, fed by the bus (a seed read at connect, then
PropertiesChanged signals) and tested with plain dicts. Counters here only
ever go up: systemd's own NRestarts falls to 0 on a manual start or
reset-failed, and Result=watchdog is overwritten by the restart that
follows, so both are turned into events the moment they are seen.
"""

from __future__ import annotations

import dataclasses

# Results pre-created at 0 so that rate()/increase() see the first failure.
KNOWN_FAILURES = ("exit-code", "signal", "core-dump", "watchdog", "oom-kill", "timeout",
                  "start-limit-hit")
# systemd_exporter's five, in its order; while a unit reloads none of them is 1 (as there).
STATES = ("active", "activating", "deactivating", "inactive", "failed")


@dataclasses.dataclass
class UnitState:
    name: str
    load_state: str | None = None
    active_state: str | None = None
    sub_state: str | None = None
    service_type: str | None = None
    result: str | None = None
    n_restarts: int | None = None
    watchdog_usec: int = 0
    watchdog_timestamp_usec: int = 0   # CLOCK_MONOTONIC of the last ping (or start)
    control_group: str | None = None
    cpu_affinity: bytes = b""          # CPUAffinity= as applied (byte-array mask)
    allowed_cpus: bytes = b""          # AllowedCPUs= as applied
    restarts_total: int = 0
    failures_total: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(KNOWN_FAILURES, 0))

    @property
    def unit_type(self) -> str:
        """systemd_exporter's "type" label: the unit's suffix (service, target, ...), not Type=."""
        return self.name.rpartition(".")[2]

    @property
    def exists(self) -> bool:
        return self.load_state not in (None, "not-found")

    def seed(self, props: dict) -> None:
        """Take the full state at (re)connect without counting what happened before we looked.

        Restarts missed while disconnected are still counted: NRestarts only
        grows between manual starts.
        """
        self._take(props, count_result=False)

    def update(self, props: dict) -> bool:
        """Take a PropertiesChanged set; True when it changed what the exporter serves.

        systemd signals every change of a unit, most of them nothing served
        here: a STATUS= line each second (MXRC's RT loop reports its latency so)
        would otherwise make a new snapshot, with its cgroup reads, each time.
        """
        before = self.copy()
        self._take(props, count_result=True)
        return self != before

    def reconcile(self, props: dict) -> None:
        """Take a full read after a gap (reconnect, reload, unit loaded again).

        Restarts in the gap count through NRestarts; a failure counts when its
        Result= is still there to see (a later successful start overwrites it,
        and then only the restart is known). A daemon-reload sends UnitRemoved
        and UnitNew for units that keep their NRestarts, so the last value seen
        stays the reference: restarts of a unit before the exporter first saw
        it are not counted, and none is counted twice.
        """
        self._take(props, count_result=True)

    def forget(self) -> None:
        """systemd unloaded the unit: no state to serve until it is loaded again; counters are kept."""
        self.load_state = self.active_state = self.sub_state = None

    def _take(self, props: dict, count_result: bool) -> None:
        if "NRestarts" in props:
            self._count_restarts(int(props["NRestarts"]))
        if "Result" in props:
            new = props["Result"]
            if count_result and new != self.result and new != "success":
                self.failures_total[new] = self.failures_total.get(new, 0) + 1
            self.result = new
        for key, attr in (("LoadState", "load_state"), ("ActiveState", "active_state"),
                          ("SubState", "sub_state"), ("Type", "service_type"),
                          ("ControlGroup", "control_group")):
            if key in props:
                setattr(self, attr, props[key] or None)
        for key, attr in (("CPUAffinity", "cpu_affinity"), ("AllowedCPUs", "allowed_cpus")):
            if key in props:
                setattr(self, attr, bytes(props[key] or b""))
        if "WatchdogUSec" in props:
            self.watchdog_usec = int(props["WatchdogUSec"])
        if "WatchdogTimestampMonotonic" in props:
            self.watchdog_timestamp_usec = int(props["WatchdogTimestampMonotonic"])

    def _count_restarts(self, now: int) -> None:
        last = self.n_restarts
        if last is not None:
            # A drop means systemd reset it (manual start, reset-failed): all of
            # the new value happened since.
            self.restarts_total += now - last if now >= last else now
        self.n_restarts = now

    def copy(self) -> "UnitState":
        """A snapshot of this state (its only mutable field is the failures dict)."""
        return dataclasses.replace(self, failures_total=dict(self.failures_total))

    def watchdog_ping_age(self, monotonic_usec: int) -> float | None:
        """Seconds since the last WATCHDOG=1 (or since start), while the watchdog is armed."""
        if not self.watchdog_usec or not self.watchdog_timestamp_usec or self.active_state != "active":
            return None
        return max(0, monotonic_usec - self.watchdog_timestamp_usec) / 1e6
