"""The worker's prune timer (``kcdp worker --prune-interval``): every interval, the volumes
of the worker's partitions are pruned with the configured retention policy, one at a
time, on a thread of their own (never the event loop or the build thread). A failure is
logged with its volume and counted; it never stops the worker — the store is left as a
killed prune leaves it, which the next run finishes (docs/FORMAT.md "Retention").

Metrics (the worker's registry): ``kcdp_history_seconds{volume}`` (age of the oldest
any-point point), ``kcdp_history_target_seconds{volume}`` (keep_within),
``kcdp_stored_bytes{volume,tier}``, ``kcdp_prune_last_success_timestamp_seconds{volume}``,
``kcdp_prune_failures_total{volume}``, ``kcdp_prune_bytes_freed_total{volume}`` and
``kcdp_history_shortened{volume}`` (1 when max_bytes shortened the journal).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from connectors.errors import KcdpError
from connectors.retention.policy import RetentionPolicy
from connectors.retention.prune import prune_volume
from connectors.retention.report import PruneReport
from connectors.store.base import ObjectStore

log = logging.getLogger("kcdp.retention")


class PruneMetrics:
    """The prune's metrics, in the worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.history = Gauge(
            "kcdp_history_seconds", "Age of the oldest any-point point", ["volume"], registry=r
        )
        self.target = Gauge(
            "kcdp_history_target_seconds", "The policy's keep_within", ["volume"], registry=r
        )
        self.stored = Gauge(
            "kcdp_stored_bytes", "Stored window bytes by tier", ["volume", "tier"], registry=r
        )
        self.success = Gauge(
            "kcdp_prune_last_success_timestamp_seconds",
            "When the last prune of the volume succeeded",
            ["volume"],
            registry=r,
        )
        self.failures = Counter("kcdp_prune_failures", "Prunes that failed", ["volume"], registry=r)
        self.freed = Counter(
            "kcdp_prune_bytes_freed", "Bytes deleted by prunes", ["volume"], registry=r
        )
        self.shortened = Gauge(
            "kcdp_history_shortened",
            "1 when max_bytes shortened the any-point journal at the last prune",
            ["volume"],
            registry=r,
        )

    def record(self, report: PruneReport, policy: RetentionPolicy) -> None:
        v = report.volume
        self.history.labels(v).set(report.history_seconds)
        if policy.keep_within is not None:
            self.target.labels(v).set(policy.keep_within)
        for tier, size in report.stored_bytes.items():
            self.stored.labels(v, tier).set(size)
        self.success.labels(v).set(time.time())
        self.freed.labels(v).inc(report.bytes_freed)
        self.shortened.labels(v).set(1 if report.shortened else 0)


@dataclass(frozen=True, slots=True)
class PruneSchedule:
    """``kcdp worker --prune-interval SECONDS`` and the policy it applies."""

    interval: float
    policy: RetentionPolicy


class Pruner:
    """Prunes the given volumes with ``policy``; used from one thread at a time."""

    def __init__(
        self,
        store: ObjectStore,
        policy: RetentionPolicy,
        workdir: Path,
        registry: CollectorRegistry,
    ) -> None:
        self.store = store
        self.policy = policy
        self.workdir = workdir
        self.metrics = PruneMetrics(registry)

    def run(self, volumes: Iterable[str]) -> list[PruneReport]:
        """Prune each volume; failures are logged and counted, the others go on."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        done = []
        for volume in sorted(set(volumes)):
            try:
                report = prune_volume(self.store, volume, self.policy, workdir=self.workdir)
            except (KcdpError, OSError) as exc:
                self.metrics.failures.labels(volume).inc()
                log.error("volume %s: prune failed (the next run finishes it): %s", volume, exc)
                continue
            self.metrics.record(report, self.policy)
            if report.deleted or report.consolidate:
                log.info(
                    "volume %s: pruned: %d run(s) consolidated, %d object(s) deleted, "
                    "%d bytes freed",
                    volume,
                    len(report.consolidate),
                    report.deleted,
                    report.bytes_freed,
                )
            done.append(report)
        return done
