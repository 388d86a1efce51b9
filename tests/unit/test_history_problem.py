"""``kcdp points`` (and ``kcdp status``) say when the newest stored window is not vouched
for by the head: a deleted newest manifest must not pass for an older newest point."""

from __future__ import annotations

from pathlib import Path

from connectors.restore.catalog import Catalog
from connectors.restore.verify import list_points
from schemas import keys
from tests.line_support import Log
from tests.streams_support import Volume


def test_a_deleted_newest_manifest_is_a_history_problem(tmp_path: Path) -> None:
    v = Volume("hp", 4096)
    log = Log(tmp_path, v, count=3)
    log.good(*v.start())
    for k in range(9):
        log.good(v.write(100 * k, b"data"))
    log.finish()
    log.check()
    store = log.proc.store
    catalog = Catalog(store, "hp")
    assert list_points(catalog)["history_problem"] is None
    assert catalog.history_problem() is None
    newest = catalog.windows[-1]
    store.delete(newest.key)
    catalog = Catalog(store, "hp")
    points = list_points(catalog)
    assert points["newest"] < newest.last  # what the manifests alone would claim
    problem = points["history_problem"]
    assert problem is not None and problem.startswith(newest.key)  # the window lost
    assert keys.head_key("hp") in problem and "newer windows were lost" in problem
    assert catalog.history_problem() == problem
