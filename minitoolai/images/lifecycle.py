"""Start and stop of images: builds the backends, storage and service, attaches the service
to the runtime, and runs the embedded workers and the retention sweep."""

from __future__ import annotations

import asyncio
import signal

from minitoolai.images.backends import build_backends, model_ready


def extend_catalog(settings, catalog) -> None:
    """The seed's 15 image models are in the default catalog; nothing to add."""


def availability(settings, model) -> tuple[bool, str]:
    """Whether this server can serve the model, from configuration alone, and why not."""
    return model_ready(settings, model.id)


def _build(runtime):
    from minitoolai.images.service import ImagesService
    from minitoolai.images.storage import build_storage

    backends = build_backends(runtime.settings)
    return ImagesService(runtime, backends, build_storage(runtime.settings))


def _workers(service, count: int, prefix: str):
    from minitoolai.images.worker import Worker

    return [Worker(service.db, service.settings, service.backends, service.storage,
                   name=f"{prefix}-{i}", wake=service.wake, on_done=service.notify_done)
            for i in range(count)]


async def start(runtime) -> None:
    """Build the images service; set runtime.images; start embedded workers."""
    extend_catalog(runtime.settings, runtime.catalog)
    service = _build(runtime)
    runtime.images = service
    runtime.background.append(asyncio.create_task(service.run_retention(),
                                                  name="images-retention"))
    if runtime.run_workers and service.backends:
        for worker in _workers(service, runtime.settings.images.embedded_workers, "embedded"):
            runtime.background.append(asyncio.create_task(worker.run(), name=worker.name))


async def stop(runtime) -> None:
    """Release backends (pipelines, HTTP pools) and storage clients."""
    service = runtime.images
    if service is None:
        return
    await service.stop_undoing()
    closed = set()
    for backend in service.backends.values():
        if id(backend) not in closed:
            closed.add(id(backend))
            await backend.close()
    await service.storage.close()


async def run_standalone_worker(settings) -> None:
    """`minitoolai worker`: drain the image queue until SIGINT/SIGTERM."""
    from minitoolai.runtime import Runtime

    runtime = Runtime.build(settings)
    await runtime.db.sync_clock()  # leases run on the database's clock
    runtime.background.append(asyncio.create_task(runtime.db.run_maintenance()))
    runtime.run_workers = False
    service = _build(runtime)
    runtime.images = service
    if not service.backends:
        await runtime.db.dispose()
        raise SystemExit("no image model is installed in this configuration (images.models);"
                         " nothing to work on. See docs/images.md")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    port = settings.images.worker_metrics_port
    if port and settings.metrics_enabled:
        from prometheus_client import start_http_server

        # a thread of prometheus-client's own: nothing else of the worker serves HTTP
        start_http_server(port, addr=settings.images.worker_metrics_host)
    workers = _workers(service, settings.images.standalone_workers, "worker")
    tasks = [asyncio.create_task(w.run(), name=w.name) for w in workers]
    # the operator's confirmation (and the point from which SIGTERM stops it cleanly)
    print(f"minitoolai worker: {len(tasks)} loop(s) serving"
          f" {', '.join(sorted(service.backends))}; stop with Ctrl-C or SIGTERM"
          + (f"; metrics on http://{settings.images.worker_metrics_host}:{port}/metrics"
             if port and settings.metrics_enabled else ""), flush=True)
    try:
        await stopping.wait()
    finally:
        # drain: no new job, the running batches may finish; past the drain time they are
        # cancelled and hand their jobs back to the queue (see Worker._run_batch)
        for w in workers:
            w.stop()
        drain = settings.images.stop_drain_seconds
        _, pending = await asyncio.wait(tasks, timeout=drain)
        if pending:
            print(f"minitoolai worker: {len(pending)} batch(es) still running after {drain:g}"
                  " s; handing their jobs back to the queue", flush=True)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop(runtime)
        await runtime.db.dispose()
