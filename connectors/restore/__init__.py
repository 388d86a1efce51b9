"""The restore side of kafka-cdp: live replica, volume catalog, planner, executor, verifier.

* :mod:`connectors.restore.replica` — a hot standby image following the topic.
* :mod:`connectors.restore.catalog` — a volume's timeline read from the object store.
* :mod:`connectors.restore.planner` — forward / backward restore paths priced in bytes.
* :mod:`connectors.restore.materialize` — runs a plan into a sparse file or block device.
* :mod:`connectors.restore.verify` — scrubs manifests, objects and the window chain.
"""
