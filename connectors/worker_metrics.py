"""What running workers say about their volumes right now, read from their ``/metrics``.

Some facts exist only inside a worker — records held in quarantine, records a re-read
found (docs/FORMAT.md "Quarantine") — so ``kcdp status --worker-metrics URL`` reads them
from each worker's Prometheus endpoint and adds them per volume.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from connectors.errors import BrokerError, UsageError

#: Seconds to wait for one worker's ``/metrics`` (``--timeout`` overrides).
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """One volume's live figures, summed over the workers read (one owns it)."""

    quarantined: int = 0
    reread_found: int = 0


def parse_worker_metrics(text: str) -> dict[str, WorkerFigures]:
    """Per-volume figures in one worker's Prometheus text (volumes it does not build are
    absent). Raises UsageError if the text is not Prometheus exposition."""
    held: dict[str, float] = {}
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                volume = sample.labels.get("volume")
                if volume is None:
                    continue
                if sample.name == "kcdp_quarantined_events":
                    held[volume] = held.get(volume, 0.0) + sample.value
                elif sample.name == "kcdp_reread_found_total":
                    found[volume] = found.get(volume, 0.0) + sample.value
    except ValueError as exc:
        raise UsageError(f"not Prometheus metrics: {exc}") from None
    return {
        v: WorkerFigures(int(held.get(v, 0)), int(found.get(v, 0)))
        for v in sorted(held.keys() | found.keys())
    }


def read_worker_metrics(
    urls: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, WorkerFigures]:
    """Figures of every volume the workers at ``urls`` build; raises BrokerError naming a
    worker that cannot be read (a status that silently lacks a worker would mislead)."""
    out: dict[str, WorkerFigures] = {}
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--worker-metrics must be an http(s) URL, not {url!r}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise BrokerError(f"cannot read worker metrics at {url}: {exc}") from None
        for volume, f in parse_worker_metrics(text).items():
            had = out.get(volume, WorkerFigures())
            out[volume] = WorkerFigures(
                had.quarantined + f.quarantined, had.reread_found + f.reread_found
            )
    return out
