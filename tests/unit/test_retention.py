"""Retention units: the policy's parsing, the selection's rules, the grace period as a
reader sees it, and the chunk refresh that closes the "exists, skip upload" then
"unreferenced, delete" race (docs/FORMAT.md "Retention")."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from connectors.errors import ConfigError, GapError, NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.retention.collect import collect_chunks, settle
from connectors.retention.policy import RetentionPolicy, resolve_policy
from connectors.retention.prune import prune_volume
from connectors.retention.select import HOUR_US, WindowFacts, select
from connectors.store import MemoryStore, open_store
from schemas import keys
from schemas.checkpoint import CHUNK_REFRESH_US, write_checkpoint
from schemas.image import Image
from schemas.retention import Candidate
from tests.retention_support import Partition, promised_points


def test_policy_resolves_flags_over_env_over_table() -> None:
    table = {"keep_within": "2d", "keep_daily": 7, "max_bytes": "20G", "grace": "2h"}
    env = {"KCDP_KEEP_WITHIN": "36h", "KCDP_KEEP_HOURLY": "48"}
    p = resolve_policy(table, env, {"keep_daily": "30", "keep_hourly": None})
    assert p.keep_within == 36 * 3600 and p.keep_hourly == 48 and p.keep_daily == 30
    assert p.max_bytes == 20 << 30 and p.grace == 7200
    assert resolve_policy(None, {}).empty and not p.empty
    assert p.base_slack == 0.25  # the default
    assert resolve_policy({"base_slack": 1}, {"KCDP_BASE_SLACK": "0.5"}).base_slack == 0.5


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"keep_within": "soon"}, "not a duration"),
        ({"keep_daily": "many"}, "not a count"),
        ({"max_bytes": "big"}, "not a size"),
        ({"keep_forever": 1}, "unknown setting"),
        ({"grace": "10m"}, "below the minimum"),
        ({"keep_hourly": -1}, "must not be negative"),
        ({"base_slack": "lots"}, "not a fraction"),
        ({"base_slack": -0.1}, "must not be negative"),
    ],
)
def test_bad_policy_settings_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_policy(table, {})


def _facts(times_h: list[float], consistent: bool = True) -> list[WindowFacts]:
    return [
        WindowFacts(i * 10, i * 10 + 9, int(t * HOUR_US), consistent, (), False)
        for i, t in enumerate(times_h)
    ]


def test_each_bucket_keeps_its_newest_edge_and_the_rest_is_consolidated() -> None:
    # windows every 20 min over 6 h; the journal is the last 2 windows; 3 hourly points
    times = [1000 + k / 3 for k in range(18)]
    facts = _facts(times)
    ref = int(times[-1] * HOUR_US)
    sel = select(facts[:16], 18, 16, RetentionPolicy(keep_within=1.0, keep_hourly=3), ref)
    hourly = [e for e in sel.edges if 0 <= e < 15]
    assert hourly == [11, 14]  # the newest window of the hours 1003 and 1004
    assert sel.base == 11  # the oldest kept edge; everything before it goes
    # 12..14 become one window ending at edge 14; 15 (before the journal) loses its log
    assert sel.groups == ((12, 14), (15, 15))
    assert sel.intact == frozenset({16, 17})  # the journal


def test_inconsistent_edges_are_never_tier_points_and_no_policy_keeps_all() -> None:
    facts = _facts([1000, 1001, 1002, 1003], consistent=False)
    sel = select(facts[:3], 4, 3, RetentionPolicy(keep_hourly=10), int(1003 * HOUR_US))
    assert sel.base == 2 and sel.groups == ()  # only the edge before the newest window
    everything = select(facts, 4, 0, RetentionPolicy(), int(1003 * HOUR_US))
    assert everything.base is None and everything.groups == ()


def test_a_reader_listed_before_a_prune_keeps_restoring_until_the_grace_ends(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    part = Partition(store, tmp_path / "work", random.Random(9))
    part.write(120, mean_gap_us=30 * 60 * 1_000_000)
    part.close()
    policy = RetentionPolicy(keep_within=6 * 3600.0, grace=3600.0, unsafe_grace=True)
    volume = "va"
    catalog = Catalog(store, volume)
    catalog.manifests()  # a restore planned before the prune
    old = next(o for o, _ in part.history.of(volume) if o >= part.history.baseline_end(volume))
    now = part.history.events[-1].timestamp_us
    prune_volume(store, volume, policy, workdir=tmp_path, now_us=now)
    prune_volume(store, volume, policy, workdir=tmp_path, now_us=now + HOUR_US - 1)
    out = tmp_path / "old.img"
    restore_point(store, catalog, old, out, direction="forward", progress=False)
    assert out.read_bytes() == part.history.image_at(volume, old)
    with pytest.raises(NotRestorableError, match="dropped by the retention policy"):
        restore_point(store, Catalog(store, volume), old, out, progress=False)
    prune_volume(store, volume, policy, workdir=tmp_path, now_us=now + HOUR_US)
    with pytest.raises(GapError):  # the grace is over: its objects are gone, never wrong bytes
        restore_point(store, catalog, old, out, direction="forward", progress=False)
    for point in sorted(promised_points(part, volume, policy))[:5]:
        restore_point(store, Catalog(store, volume), point, out, progress=False)
        assert out.read_bytes() == part.history.image_at(volume, point)


def test_a_checkpoint_writes_again_a_chunk_stored_long_ago(tmp_path: Path) -> None:
    """A chunk marked as a candidate and taken by a new checkpoint must survive even when
    the collection lists the checkpoints before that checkpoint's document lands: the
    checkpoint writes the old chunk again (its modification time moves), so the mark no
    longer holds."""
    store = open_store(f"file://{tmp_path / 'store'}")
    with Image(tmp_path / "img", 8192) as image:
        image.pwrite(0, b"x" * 8192)
        first = write_checkpoint(
            store, image, volume="v", offset=5, chunk_size=4096, window_digest="0" * 64
        )
    chunk = keys.chunk_key(str(first.chunks[0]))
    long_ago = time.time() - 2 * CHUNK_REFRESH_US / 1e6
    os.utime(tmp_path / "store" / chunk, (long_ago, long_ago))
    store.delete(first.key)  # the only checkpoint referencing it goes
    now = time.time_ns() // 1000
    marked = collect_chunks(store, now_us=now, grace_us=10**6, step=lambda _: None)
    assert chunk in {c.key for c in marked.candidates}
    with Image(tmp_path / "img", 8192) as image:  # a new checkpoint of the same content
        second = write_checkpoint(
            store, image, volume="v", offset=9, chunk_size=4096, window_digest="1" * 64
        )
    store.delete(second.key)  # as if the collection listed before its document landed
    later = now + 10**7
    swept = collect_chunks(store, now_us=later, grace_us=10**6, step=lambda _: None)
    assert chunk not in swept.deleted
    assert store.stat(chunk).size > 0


def test_max_bytes_shortens_the_journal_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    part = Partition(store, tmp_path / "work", random.Random(11))
    part.write(150, mean_gap_us=10 * 60 * 1_000_000)
    part.close()
    now = part.history.events[-1].timestamp_us
    roomy = RetentionPolicy(keep_within=48 * 3600.0, grace=3600.0, unsafe_grace=True)
    full = prune_volume(store, "va", roomy, workdir=tmp_path, now_us=now, dry_run=True)
    assert not full.shortened
    tight = RetentionPolicy(
        keep_within=48 * 3600.0,
        max_bytes=full.stored_bytes["any-point"] // 3,
        grace=3600.0,
        unsafe_grace=True,
    )
    report = prune_volume(store, "va", tight, workdir=tmp_path, now_us=now)
    assert report.shortened and report.journal_from is not None
    assert full.journal_from is not None and report.journal_from > full.journal_from
    assert report.history_seconds < full.history_seconds
    assert "exceed max_bytes" in caplog.text and "shortened" in caplog.text
    catalog = Catalog(store, "va")
    newest = catalog.windows[-1].last
    restore_point(store, catalog, newest, tmp_path / "n.img", progress=False)
    assert (tmp_path / "n.img").read_bytes() == part.history.image_at("va", newest)


def test_status_says_when_the_journal_holds_less_than_three_quarters_of_keep_within(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from connectors.cli.status import retention_lines
    from connectors.status_figures import VolumeStatus, WorkerHealth, history_figures

    store = MemoryStore()
    part = Partition(store, tmp_path / "work", random.Random(12))
    part.write(100, mean_gap_us=20 * 60 * 1_000_000)  # ~33 h
    part.close()
    now = part.history.events[-1].timestamp_us
    policy = RetentionPolicy(keep_within=12 * 3600.0, grace=3600.0, unsafe_grace=True)
    prune_volume(store, "va", policy, workdir=tmp_path, now_us=now)
    catalog = Catalog(store, "va")
    ok = history_figures(catalog, 12 * 3600.0)
    assert 12 * 3600 <= ok["history_seconds"] < 14 * 3600 and not ok["history_short"]
    assert catalog.base is not None and ok["base_offset"] == catalog.base.offset
    short = history_figures(catalog, 24 * 3600.0)  # configured longer than what is held
    assert short["history_short"]
    health = WorkerHealth("g", None, 0, None, None, "-")
    row = VolumeStatus(
        "va",
        "g",
        "t",
        0,
        None,
        None,
        None,
        None,
        None,
        len(catalog),
        0,
        0,
        True,
        0.0,
        None,
        None,
        0,
        [],
        0,
        {},
        [],
        None,
        None,
        None,
        health,
        now,
        **short,
    )
    lines = retention_lines([row])
    assert any(line.startswith("WARNING va: the any-point journal holds") for line in lines)
    assert any("pruned to base @" in line for line in lines)
    assert not any("WARNING" in line for line in retention_lines([replace(row, **ok)]))


def test_hold_keeps_every_edge_before_the_oldest_kept_one() -> None:
    times = [1000 + k / 3 for k in range(18)]
    facts = _facts(times)
    ref = int(times[-1] * HOUR_US)
    policy = RetentionPolicy(keep_within=1.0, keep_hourly=3)
    held = select(facts[:16], 18, 16, policy, ref, hold=True)
    assert held.base is None  # the base stays where it is
    assert [e for e in held.edges if e <= 11] == list(range(-1, 12))
    # each window before edge 11 stays a point (consolidated alone: its log goes)
    assert held.groups == (*((i, i) for i in range(12)), (12, 14), (15, 15))


def test_the_base_stays_within_its_slack_and_moves_once_past_it(tmp_path: Path) -> None:
    """``base_slack``: a prune whose base move would drop windows holding fewer forward
    bytes than the slack leaves the base and keeps their edges (restorable, exact); with
    slack 0 the same prune moves the base and those edges are refused (exit 8)."""
    from schemas.retention import load_retention

    store = MemoryStore()
    part = Partition(store, tmp_path / "work", random.Random(5))
    part.write(120, mean_gap_us=10 * 60 * 1_000_000)
    part.close()
    now = part.history.events[-1].timestamp_us
    from dataclasses import replace

    policy = RetentionPolicy(keep_within=2 * 3600.0, keep_hourly=2, grace=3600.0, unsafe_grace=True)
    plan = prune_volume(
        store,
        "va",
        replace(policy, base_slack=0.0),
        workdir=tmp_path,
        now_us=now,
        dry_run=True,
    )
    assert plan.base is not None
    before = [w.last for w in Catalog(store, "va").windows if w.last < plan.base]
    assert before, "the history has windows before the oldest kept edge"
    held = prune_volume(
        store, "va", replace(policy, base_slack=1000.0), workdir=tmp_path, now_us=now
    )
    assert held.base is None and load_retention(store, "va") is not None
    assert load_retention(store, "va").base is None  # type: ignore[union-attr]
    catalog = Catalog(store, "va")
    for point in before:
        out = tmp_path / f"held-{point}.img"
        restore_point(store, catalog, point, out, progress=False)
        assert out.read_bytes() == part.history.image_at("va", point)
    moved = prune_volume(store, "va", replace(policy, base_slack=0.0), workdir=tmp_path, now_us=now)
    assert moved.base == plan.base
    state = load_retention(store, "va")
    assert state is not None and state.base is not None and state.base.offset == plan.base
    catalog = Catalog(store, "va")
    for point in before:
        with pytest.raises(NotRestorableError):
            restore_point(store, catalog, point, tmp_path / "gone.img", progress=False)
    restore_point(store, catalog, plan.base, tmp_path / "base.img", progress=False)
    assert (tmp_path / "base.img").read_bytes() == part.history.image_at("va", plan.base)


def test_settle_deletes_due_candidates_in_parallel_and_spares_one_written_again() -> None:
    """Due candidates are deleted (many at a time) with one step each; one written again
    since it was marked, or gone, is not; a new one is only marked."""
    store = MemoryStore()
    for i in range(40):
        store.put(f"g/{i:02d}", bytes(i + 1))
    listing = {i.key: i for i in store.list("g/")}
    now, grace = 10 * HOUR_US, HOUR_US
    marked = [Candidate(k, now - 2 * grace, info.modified_us) for k, info in listing.items()]
    time.sleep(0.002)
    store.put("g/07", b"written again")  # a worker re-stored it after the mark
    store.delete("g/08")  # gone already
    store.put("g/new", b"x")
    garbage = {k: v for k, v in listing.items() if k != "g/08"}
    garbage["g/new"] = store.stat("g/new")
    steps: list[str] = []
    out = settle(store, marked, garbage, now_us=now, grace_us=grace, step=steps.append)
    survivors = {i.key for i in store.list("g/")}
    assert survivors == {"g/07", "g/new"}
    assert sorted(out.deleted) == sorted(set(listing) - {"g/07", "g/08"})
    assert steps == ["delete"] * len(out.deleted)
    assert out.bytes_freed == sum(listing[k].size for k in out.deleted)
    assert {c.key: c.marked_us for c in out.candidates} == {"g/07": now, "g/new": now}
    assert out.marked == 2


def test_a_candidate_marked_by_a_clock_ahead_restarts_its_grace_now() -> None:
    """A mark after the prune's clock (the clock stepped back, or a host whose clock was
    ahead marked it) is neither deleted early nor held until that clock comes: it is
    marked again at the prune's time and deleted one grace later."""
    store = MemoryStore()
    store.put("g/a", b"abc")
    info = store.stat("g/a")
    garbage = {"g/a": info}
    now, grace = 10 * HOUR_US, 2 * HOUR_US
    future = [Candidate("g/a", now + 30 * 24 * HOUR_US, info.modified_us)]
    steps: list[str] = []
    out = settle(store, future, garbage, now_us=now, grace_us=grace, step=steps.append)
    assert out.deleted == [] and steps == [] and store.stat("g/a").size == 3
    assert out.candidates == (Candidate("g/a", now, info.modified_us),)
    out = settle(
        store, out.candidates, garbage, now_us=now + grace - 1, grace_us=grace, step=steps.append
    )
    assert out.deleted == [] and out.candidates[0].marked_us == now  # grace not over yet
    out = settle(
        store, out.candidates, garbage, now_us=now + grace, grace_us=grace, step=steps.append
    )
    assert out.deleted == ["g/a"] and out.candidates == () and steps == ["delete"]
