"""Embedding on a Ray cluster: ``embedder.embed(pool, executor="ray")``.

The rows still to compute go through Ray Data in two stages: reading, decoding and
resizing in ``map_batches`` tasks (CPU, PIL: the embedder's ``_row_loader()``), then the model
in a pool of stateful actors (each builds the model once, on one GPU when the cluster has
GPUs, else on CPU: the embedder's ``_runtime()`` and ``_forward_rows()``). Results stream back
to the driver, where the shared run loop (:meth:`~alwidgets.embed.Embedder.embed`) writes them
as the cache chunks of the same cache entry the local executor uses: a run killed half-way
recomputes only the chunks (shards) not yet on disk, and a pool embedded on Ray is a cache hit
locally and the other way round. Unreadable files come back as per-item errors, as locally.

Every node must be able to read the pool's files (a shared file system or the same paths) and
import ``alwidgets``; the embedder (with its model weights) and the pool are shipped to the
cluster once through the object store. Install with ``pip install "alwidgets[ray]"``.
"""
from __future__ import annotations

import copy
import os

import numpy as np

from .base import Executor


class RayExecutor(Executor):
    """Run an embedder's two stages on Ray Data: decoding tasks, then model actors.

    Parameters
    ----------
    address : str, optional
        Cluster to connect to when Ray is not initialised yet: ``"auto"``, ``"HOST:PORT"``,
        ``"ray://HOST:10001"``; default ``$RAY_ADDRESS``, else a local Ray started by ``ray.init()``.
    num_actors : int, optional
        Model actors; default one per GPU of the cluster, else half its CPUs (at least 1).
    actor_cpus, task_cpus : float
        CPUs reserved per model actor and per decoding task.
    batch_size : int, optional
        Images per batch in both stages; default the embedder's batch size on the actors' device.

    Examples
    --------
    >>> from alwidgets.embed.ray import RayExecutor
    >>> RayExecutor(address="auto", num_actors=2)
    RayExecutor(address='auto', num_actors=2)
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_actors: int | None = None, actor_cpus: float = 1.0,
                 task_cpus: float = 0.5, batch_size: int | None = None):
        self.address = address
        self.num_actors = num_actors
        self.actor_cpus = actor_cpus
        self.task_cpus = task_cpus
        self.batch_size = batch_size

    def __repr__(self) -> str:
        defaults = dict(address=None, num_actors=None, actor_cpus=1.0, task_cpus=0.5, batch_size=None)
        args = [f"{k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v]
        return f"RayExecutor({', '.join(args)})"

    # ------------------------------------------------------------------ cluster
    def _ray(self):
        try:
            import ray
        except ImportError:
            raise ImportError('executor="ray" needs Ray: pip install "alwidgets[ray]"') from None
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConnectionError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
        return ray

    def _gpus(self) -> int:
        return int(self._ray().cluster_resources().get("GPU", 0))

    def prepare(self, embedder):
        """A copy of ``embedder`` with its device and decoding pinned to what the actors will use,
        so the cache key names what runs: ``"cuda"`` when the cluster has GPUs, else ``"cpu"``;
        PIL decoding (``decode="auto"`` becomes ``"pil"``)."""
        for hook in ("_row_loader", "_runtime", "_forward_rows"):
            if not hasattr(embedder, hook):
                raise TypeError(f"{type(embedder).__name__} cannot run on Ray: it has no {hook}() "
                                "(the two stages: decoding, then the model)")
        emb = copy.copy(embedder)
        if getattr(emb, "device", None) == "auto":
            emb.device = "cuda" if self._gpus() else "cpu"
        if getattr(emb, "decode", None) == "auto":
            emb.decode = "pil"
        return emb

    # ---------------------------------------------------------------------- run
    def run(self, embedder, pool, chunks):
        ray = self._ray()
        import ray.data

        rows = np.concatenate([np.arange(r.start, r.stop, dtype=np.int64) for r in chunks.values()])
        gpus = self._gpus()
        device = embedder._device(check=False)
        use_gpu = device.type == "cuda"
        if use_gpu and not gpus:
            raise RuntimeError(f"device={embedder.device!r} but the Ray cluster has no GPUs")
        bs = int(self.batch_size or embedder._batch_size(device))
        actors = self.num_actors or (gpus if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 2)) // 2))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the run loop shows one bar on the driver
        ctx.execution_options.preserve_order = False  # chunks are assembled in any order
        loader = ray.put(embedder._row_loader())
        pool_ref = ray.put(pool)
        emb_ref = ray.put(embedder)
        ds = ray.data.from_numpy(rows).map_batches(
            _load_batch, fn_kwargs=dict(loader=loader, pool=pool_ref), batch_size=bs, batch_format="numpy",
            num_cpus=self.task_cpus)
        ds = ds.map_batches(
            _ModelActor, fn_constructor_kwargs=dict(embedder=emb_ref), batch_size=bs, batch_format="numpy",
            concurrency=int(actors), num_cpus=self.actor_cpus, num_gpus=1 if use_gpu else 0)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            r = batch["row"].astype(np.int64)
            errors = {int(i): str(e) for i, e in zip(r, batch["error"]) if e}
            yield r, batch["X"], errors


def _check_reachable(address, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` (or ``ray://HOST:PORT``) nobody listens on: Ray itself would
    retry for minutes before giving up."""
    import socket

    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None


def _get(x):
    import ray

    return ray.get(x) if isinstance(x, ray.ObjectRef) else x


def _load_batch(batch: dict, loader, pool) -> dict:
    """Stage 1 (a Ray task): rows -> uint8 images and error messages."""
    rows = batch["data"].astype(np.int64)
    X, errors = _get(loader)(_get(pool), rows)
    return {"row": rows, "pixels": X, "error": np.array([errors.get(int(r), "") for r in rows], dtype=object)}


class _ModelActor:
    """Stage 2 (a Ray actor): builds the model once, embeds every batch it is given."""

    def __init__(self, embedder):
        self.embedder = _get(embedder)
        self.rt = self.embedder._runtime()

    def __call__(self, batch: dict) -> dict:
        X = self.embedder._forward_rows(self.rt, batch["pixels"])
        X[[bool(e) for e in batch["error"]]] = 0.0
        return {"row": batch["row"], "X": X.astype(np.float32), "error": batch["error"]}
