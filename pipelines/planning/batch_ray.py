"""The Ray backend of batch scoring: the same `ScoringWorker` as the process pool, as Ray actors.

Each actor takes one CPU, loads the models once (in its constructor) and plans one case at a time; the driver keeps
every actor busy with one case and writes each record as it comes back (so resuming works exactly as with the
process pool). Without an address a local Ray is started for the run (``num_cpus = workers``, no dashboard, a small
object store) and shut down after it; with ``ray_address`` (``"auto"`` or ``"ray://host:10001"``) the actors run on
that cluster, which must see the manifest's files at the same paths. An already initialised Ray (e.g. in tests) is
used as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

from models.errors import BatchError
from pipelines.manifest import ManifestRecord
from pipelines.planning.batch import ScoringWorker

__all__ = ["run_ray", "LOCAL_OBJECT_STORE_BYTES"]

LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2  # records are small JSON-like dicts; Ray's default takes 30% of RAM


def run_ray(records: Sequence[ManifestRecord], settings: dict[str, Any], loader: str, workers: int,
            threads: int | None, address: str | None = None) -> Iterator[dict[str, Any]]:
    """Plan ``records`` on ``workers`` Ray actors; per-case records in completion order."""
    import ray
    from ray.exceptions import RayError

    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                         log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BatchError(f"Could not start or reach Ray{' at ' + address if address else ''}: {e}") from e
        started = True
    try:
        actor_class = ray.remote(num_cpus=1)(ScoringWorker)
        # Ray gives an actor one OpenMP thread per CPU it holds; say so explicitly for torch too.
        actors = [actor_class.remote(settings, loader, threads or 1, list(sys.path))
                  for _ in range(min(workers, len(records)))]
        pending = list(reversed(records))
        running: dict[Any, Any] = {}  # object ref -> actor
        for actor in actors:
            if pending:
                running[actor.score.remote(pending.pop())] = actor
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor = running.pop(ref)
            try:
                record = ray.get(ref)
            except RayError as e:
                raise BatchError(f"A Ray scoring worker died: {e}. Every case finished so far is saved; run the same "
                                 "command again to score the rest.") from e
            if pending:
                running[actor.score.remote(pending.pop())] = actor
            yield record
    finally:
        if started:
            ray.shutdown()
