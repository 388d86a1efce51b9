"""The Faust app of the increments worker, built by :func:`create_app` (no module global):
group membership, the task that pumps batches through :class:`~streams.worker.IncrementsWorker`
and commits, the TICK timer, rebalance handlers and ``/metrics`` (design: :mod:`streams.worker`).
The group client gets the same ``-X`` security properties as the librdkafka clients
(:mod:`connectors.kafka_security`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from prometheus_client import generate_latest

from connectors.config import Settings
from connectors.errors import KcdpError
from connectors.kafka_security import KafkaSecurity
from connectors.store.base import ObjectStore
from streams.options import WorkerOptions
from streams.pruning import Pruner, PruneSchedule
from streams.worker import IncrementsWorker

log = logging.getLogger("kcdp.worker")


def create_app(
    settings: Settings,
    *,
    store: ObjectStore,
    options: WorkerOptions,
    pruning: PruneSchedule | None = None,
) -> tuple[faust.App, IncrementsWorker]:
    """Build the Faust app and its worker state; nothing starts until the app runs.
    With ``pruning``, the volumes of the worker's partitions are pruned on a timer."""
    worker = IncrementsWorker(settings, store, options)
    app, topic = _faust_app(settings, options)
    _add_agents(app, topic, settings, worker)
    _add_handlers(app, settings, worker)
    if pruning is not None and pruning.interval > 0 and not pruning.policy.empty:
        _add_pruner(app, worker, pruning)
    return app, worker


def _add_pruner(app: faust.App, worker: IncrementsWorker, pruning: PruneSchedule) -> None:
    """The prune timer: its own thread, so windows go on being built meanwhile."""
    pruner = Pruner(
        worker.store, pruning.policy, worker.opt.workdir / "prune", worker.metrics.registry
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kcdp-prune")

    @app.timer(pruning.interval)  # type: ignore[untyped-decorator]  # Faust is untyped
    async def prune() -> None:
        volumes = [state.volume for state in worker.volume_states()]
        await asyncio.get_running_loop().run_in_executor(executor, pruner.run, volumes)


def _faust_app(settings: Settings, options: WorkerOptions) -> tuple[faust.App, Any]:
    """The Faust app (group membership, web server) and the write topic, unstarted."""
    brokers = [f"kafka://{b.strip()}" for b in settings.bootstrap_servers.split(",") if b.strip()]
    credentials = KafkaSecurity.from_properties(settings.kafka).faust_credentials()
    options.workdir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        options.group_id,
        broker=brokers,
        broker_credentials=credentials,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(options.workdir / "faust"),
        web_enabled=options.web_port is not None,
        web_port=options.web_port or 6066,
        web_bind=options.web_host,
        web_host=options.web_host,
        broker_session_timeout=options.session_timeout,
        broker_heartbeat_interval=options.heartbeat_interval,
        broker_rebalance_timeout=max(options.session_timeout, 10.0),
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=16 << 20,
        stream_buffer_maxsize=options.batch_size * 2,
        topic_disable_leader=True,
        topic_allow_declare=False,
        stream_wait_empty=False,
    )
    topic = app.topic(
        settings.topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        acks=False,
    )
    return app, topic


def _add_agents(app: faust.App, topic: Any, settings: Settings, worker: IncrementsWorker) -> None:
    """The agent that subscribes and the task that pumps and commits."""

    async def in_thread(fn: Any, *args: Any) -> Any:
        return await _in_thread(worker, fn, *args)

    def mine() -> set[faust.types.TP]:
        return {tp for tp in app.consumer.assignment() if tp.topic == settings.topic}

    @app.agent(topic, name="kcdp-increments")
    async def subscribe(stream: Any) -> None:
        """Makes Faust subscribe (group membership); the records are read by the worker."""
        async for _event in stream.events():
            pass  # delivered before its partition was paused: the reader has it too

    @app.task  # type: ignore[untyped-decorator]  # Faust is untyped
    async def commit_durable() -> None:
        """Read and process batches in the build thread; commit what became durable."""
        consumer: Any = app.consumer
        try:
            while True:
                offsets = await in_thread(worker.pump)
                if not worker.reader.assigned:
                    continue
                tps = mine()
                consumer.pause_partitions(tps)  # Faust resumes them after rebalances
                ours = {p for p in offsets if faust.types.TP(settings.topic, p) in tps}
                if ours and await consumer._commit(
                    {faust.types.TP(settings.topic, p): offsets[p] for p in ours}
                ):
                    for p in ours:
                        worker.committed(p, offsets[p])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if app.should_stop:  # a stop under way (the consumer's loop may be closed)
                log.info("worker stopping: the batch in flight is not committed (%s)", exc)
                return
            worker.fail(exc)
            if not isinstance(exc, KcdpError):
                raise  # a bug: the task's crash is logged with its traceback


async def _in_thread(worker: IncrementsWorker, fn: Any, *args: Any) -> Any:
    """Run ``fn`` in the worker's build thread."""
    return await asyncio.get_running_loop().run_in_executor(worker.executor, fn, *args)


def _add_handlers(app: faust.App, settings: Settings, worker: IncrementsWorker) -> None:
    """The TICK timer, the rebalance handlers and the metrics page."""

    async def in_thread(fn: Any, *args: Any) -> Any:
        return await _in_thread(worker, fn, *args)

    @app.timer(worker.opt.tick_interval)  # type: ignore[untyped-decorator]  # Faust is untyped
    async def ticks() -> None:
        try:
            await in_thread(worker.send_ticks)
        except Exception as exc:
            worker.fail(exc)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # signal kwarg typing
    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", set())
        try:
            await in_thread(
                worker.revoke, {tp.partition for tp in revoked if tp.topic == settings.topic}
            )
        except Exception as exc:
            worker.fail(exc)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # signal kwarg typing
    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", set())
        tps = {tp for tp in assigned if tp.topic == settings.topic}
        app.consumer.pause_partitions(tps)
        try:
            await in_thread(worker.assign, {tp.partition for tp in tps})
        except Exception as exc:
            worker.fail(exc)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(worker.metrics.registry), content_type="text/plain")
