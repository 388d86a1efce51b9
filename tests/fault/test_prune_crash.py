"""Crash safety of the prune (docs/FORMAT.md "Retention", ordering invariants): a prune
process killed with SIGKILL before a random one of its store changes, ≥ 20 times, while
the worker appends windows and checkpoints to the same file store and restores run. After
each kill every point the policy keeps (before and after the prune) restores exactly in
both directions and the chain verifies; at the end, two prunes past the grace period leave
no unreferenced object, and ``verify --read-data`` is clean."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

from connectors.errors import KcdpError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.verify import verify_volume
from connectors.retention.policy import RetentionPolicy
from connectors.retention.prune import prune_volume
from connectors.store import open_store
from tests.retention_support import HOUR_US, Partition, check_points, promised_points, unreferenced

POLICY = RetentionPolicy(
    keep_within=4 * 3600.0,
    keep_hourly=6,
    keep_daily=2,
    keep_bookmarks=8 * 3600.0,
    grace=3600.0,
    base_slack=0.0,  # the base moves at every prune that drops a window: the most steps
    unsafe_grace=True,
)
KILLS = 20
ROOT = Path(__file__).resolve().parents[2]


def _prune_killed_at(
    url: str, volumes: list[str], workdir: Path, now_us: int, at: int
) -> str | None:
    """Prune ``volumes`` in a child process that SIGKILLs itself before its ``at``-th store
    change; the step it was killed before (None: it finished first)."""
    child = [sys.executable, "-m", "tests.fault.prune_child", url, str(workdir), str(now_us)]
    done = subprocess.run([*child, str(at), *volumes], cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"prune failed ({done.returncode}): {done.stderr}")
    if done.returncode == 0:
        return None
    return done.stderr.strip().rsplit("killed before ", 1)[-1]


def _restores(
    part: Partition,
    points: dict[str, list[int]],
    tmp: Path,
    errors: list[tuple[str, int, BaseException]],
    stop: threading.Event,
) -> None:
    """A reader for as long as the prune runs: each pass lists a catalog per volume and
    then restores points from it, oldest first; wrong bytes and refusals are recorded
    (a refusal is a failure only for a point kept before and after the prune)."""
    while not stop.is_set():
        for volume, chosen in points.items():
            catalog = Catalog(part.store, volume)
            path = tmp / f"during-{volume}.img"
            for point in chosen:
                try:
                    restore_point(part.store, catalog, point, path, progress=False)
                    assert path.read_bytes() == part.history.image_at(volume, point), "bytes"
                except (KcdpError, AssertionError) as exc:
                    errors.append((volume, point, exc))


def test_prune_killed_at_random_steps_never_loses_a_kept_point(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    store = open_store(url)
    rng = random.Random(20261203)
    part = Partition(store, tmp_path / "work", rng, count=3, checkpoint_windows=4)
    (tmp_path / "prune").mkdir()
    out = tmp_path / "point.img"
    part.write(120, mean_gap_us=20 * 60 * 1_000_000)
    kills = rounds = finished = 0
    steps: set[str] = set()
    wanted = {"consolidate", "manifest", "retention", "delete"}
    while kills < KILLS or not steps >= wanted:  # the steps killed at depend on timing
        rounds += 1
        assert rounds < 5 * KILLS, "the prune finished before the chosen step too often"
        before = {v: promised_points(part, v, POLICY) for v in part.sizes}
        now = part.history.events[-1].timestamp_us + (rounds % 3) * HOUR_US  # grace passes
        concurrent_errors: list[tuple[str, int, BaseException]] = []
        points = {v: sorted(before[v])[:: max(1, len(before[v]) // 4)] for v in part.sizes}
        stop = threading.Event()
        events = rng.randint(8, 20)
        threads = [
            threading.Thread(
                target=_restores, args=(part, points, tmp_path, concurrent_errors, stop)
            ),
            threading.Thread(  # the worker goes on: windows and checkpoints meanwhile
                target=part.write, args=(events,), kwargs={"mean_gap_us": 20 * 60 * 1_000_000}
            ),
        ]
        for t in threads:
            t.start()
        at = rng.randint(1, 60) if rng.random() < 0.8 else 10**6  # some prunes finish
        killed = _prune_killed_at(url, sorted(part.sizes), tmp_path / "prune", now, at)
        stop.set()
        for t in threads:
            t.join()
        kept = {v: before[v] & promised_points(part, v, POLICY) for v in part.sizes}
        failed = [
            (v, p, e)
            for v, p, e in concurrent_errors
            if p in kept[v] or isinstance(e, AssertionError)  # wrong bytes: never
        ]
        assert not failed, failed
        if killed is not None:
            kills += 1
            steps.add(killed)
        else:
            finished += 1
        if rng.random() < 0.2:
            part.restart()
        for volume in part.sizes:
            sample = set(rng.sample(sorted(kept[volume]), min(5, len(kept[volume]))))
            check_points(part, volume, sample, out, promised=kept[volume])
            report = verify_volume(store, volume)
            assert report.ok, report.to_text()
    part.close()
    assert finished, "no prune ran to its end"
    assert steps >= wanted, steps
    later = part.history.events[-1].timestamp_us + 10 * HOUR_US
    for k in range(2):
        for volume in sorted(part.sizes):
            prune_volume(
                store, volume, POLICY, workdir=tmp_path / "prune", now_us=later + k * 2 * HOUR_US
            )
    for volume in part.sizes:
        assert unreferenced(store, volume) == []
        report = verify_volume(store, volume, read_data=True)
        assert report.ok, report.to_text()
        final = promised_points(part, volume, POLICY)
        check_points(part, volume, final, out, promised=final)
    store.close()
