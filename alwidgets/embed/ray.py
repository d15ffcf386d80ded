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

:func:`local_cluster` starts a throwaway multi-node cluster on this machine (the tests and
``benchmarks/scale.py`` use it).
"""
from __future__ import annotations

import contextlib
import copy
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .base import Executor


class RayExecutor(Executor):
    """Run an embedder's two stages on Ray Data: decoding tasks, then model actors.

    Parameters
    ----------
    address : str, optional
        Cluster to connect to when Ray is not initialised yet: ``"auto"``, ``"HOST:PORT"``,
        ``"ray://HOST:10001"``; default ``$RAY_ADDRESS``, else a local Ray started by ``ray.init()``.
    stages : {"auto", "two", "fused"}
        ``"two"``: decoding in Ray Data tasks, the model in actors (the images travel between them
        through the object store). ``"fused"``: each actor decodes its own batches, then runs the
        model: no decoding processes, no image transfers. ``"auto"``: two stages when the actors
        have GPUs (the CPUs decode while the GPUs compute), fused on a CPU-only cluster, where a
        separate stage only adds processes and copies on the same cores.
    num_actors : int, optional
        Model actors. Default: one per GPU of the cluster; on a CPU-only cluster one per node
        (spread over the nodes), so the model uses every node's cores.
    actor_cpus : float, optional
        CPUs reserved per model actor. Default: 1 with GPUs; on CPUs, the smallest node's CPUs
        (fused) or those minus ``task_cpus``, at least 0.5 (two stages: room for one decoding task
        per node). The actor's PyTorch uses that many threads (at least 1).
    task_cpus : float
        CPUs reserved per decoding task (two stages).
    batch_size : int, optional
        Images per batch in both stages; default the embedder's batch size on the actors' device.
    actor_start_timeout : float
        Seconds to wait for every model actor to start (import, build the model) before the first
        batch is handed out; a cluster without room for them is an error after that.
    stall_timeout : float
        Seconds without a finished batch, after a node of the cluster has died during the run,
        before the run gives up with an error (the shards already written stay: run again to
        resume). Ray Data restarts the actors and retries the tasks of a dead node elsewhere;
        this only stops a run that cannot go on (no room left for them).

    Examples
    --------
    >>> from alwidgets.embed.ray import RayExecutor
    >>> RayExecutor(address="auto", num_actors=2)
    RayExecutor(address='auto', num_actors=2)
    """

    name = "ray"
    _DEFAULTS = dict(address=None, stages="auto", num_actors=None, actor_cpus=None, task_cpus=0.5, batch_size=None,
                     actor_start_timeout=600.0, stall_timeout=120.0)

    def __init__(self, address: str | None = None, stages: str = "auto", num_actors: int | None = None,
                 actor_cpus: float | None = None, task_cpus: float = 0.5, batch_size: int | None = None,
                 actor_start_timeout: float = 600.0, stall_timeout: float = 120.0):
        if stages not in ("auto", "two", "fused"):
            raise ValueError(f"stages must be 'auto', 'two' or 'fused', got {stages!r}")
        self.address = address
        self.stages = stages
        self.num_actors = num_actors
        self.actor_cpus = actor_cpus
        self.task_cpus = task_cpus
        self.batch_size = batch_size
        self.actor_start_timeout = actor_start_timeout
        self.stall_timeout = stall_timeout

    def __repr__(self) -> str:
        args = [f"{k}={getattr(self, k)!r}" for k, v in self._DEFAULTS.items() if getattr(self, k) != v]
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
            for attempt in range(2):
                try:
                    ray.init(address=address, log_to_driver=False, include_dashboard=False,
                             configure_logging=False)
                    break
                except (ConnectionError, RuntimeError, ValueError) as e:
                    # a failed ray:// connect leaves this process in Ray Client mode, where every later
                    # ray.init() fails (AssertionError): undo it, so the user can connect again
                    ray.shutdown()
                    # Ray Client answered, but its per-connection server did not start (it does not
                    # always on a loaded head node): that is worth one more try, nothing else is
                    if attempt or not isinstance(e, ConnectionAbortedError):
                        raise ConnectionError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
                    warnings.warn(f"the Ray cluster at {address!r} did not start a Ray Client server for this "
                                  f"connection ({_first_line(e)}); trying once more", RuntimeWarning, stacklevel=2)
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

    def plan(self, use_gpu: bool) -> dict:
        """Stages, actors, CPUs per actor and PyTorch threads per actor on this cluster (see the
        parameters)."""
        ray = self._ray()
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        cpus = [float(r.get("CPU", 0)) for r in nodes if r.get("CPU", 0) > 0]
        total = sum(cpus)
        stages = self.stages if self.stages != "auto" else ("two" if use_gpu else "fused")
        if use_gpu:
            actors = self.num_actors or int(sum(r.get("GPU", 0) for r in nodes))
            actor_cpus = 1.0 if self.actor_cpus is None else float(self.actor_cpus)
        else:
            if not cpus:
                raise RuntimeError("the Ray cluster has no CPUs")
            actors = self.num_actors or len(cpus)
            default = min(cpus) if stages == "fused" else max(0.5, min(cpus) - self.task_cpus)
            actor_cpus = default if self.actor_cpus is None else float(self.actor_cpus)
        tasks = self.task_cpus if stages == "two" else 0.0
        if actors * actor_cpus + tasks > total + 1e-9:
            raise ValueError(f"{actors} actors x {actor_cpus:g} CPUs" + (f" + a decoding task ({tasks:g} CPUs)" if tasks else "")
                             + f" do not fit a cluster of {total:g} CPUs; lower num_actors or actor_cpus")
        return dict(stages=stages, actors=int(actors), actor_cpus=actor_cpus, threads=max(1, int(actor_cpus + 0.5)))

    # ---------------------------------------------------------------------- run
    def run(self, embedder, pool, chunks):
        """Yield ``(rows, X, errors)`` per batch; ``self.batches_per_node`` counts the batches each
        node's actors computed. Through Ray Client (``ray://``), where Ray Data cannot run on the
        client, the pipeline runs in a driver actor on the cluster and the batches are fetched from it."""
        ray = self._ray()
        device = embedder._device(check=False)
        if device.type == "cuda" and not self._gpus():
            raise RuntimeError(f"device={embedder.device!r} but the Ray cluster has no GPUs")
        self.batches_per_node = {}
        if _client_mode():
            yield from self._run_through_cluster_driver(ray, embedder, pool, chunks)
        else:
            yield from self._run_here(ray, embedder, pool, chunks)

    def _run_through_cluster_driver(self, ray, embedder, pool, chunks):
        driver = ray.remote(num_cpus=0)(_ClusterDriver).remote(self, embedder, pool, chunks)
        try:
            while True:
                items, counts = ray.get(driver.next.remote(8))
                self.batches_per_node = counts
                if not items:
                    return
                yield from items
        finally:
            ray.kill(driver)

    def _run_here(self, ray, embedder, pool, chunks):
        import ray.data

        device = embedder._device(check=False)
        use_gpu = device.type == "cuda"
        plan = self.plan(use_gpu)
        bs = int(self.batch_size or embedder._batch_size(device))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the run loop shows one bar on the driver
        ctx.execution_options.preserve_order = False  # chunks are assembled in any order
        # every actor is up before the first batch is handed out, at most 2 batches queued per
        # actor (below): the work spreads over all actors instead of going to whichever started first
        ctx.wait_for_min_actors_s = int(self.actor_start_timeout)
        loader = ray.put(embedder._row_loader())
        pool_ref = ray.put(pool)
        emb_ref = ray.put(embedder)
        # one input block per batch, never across two chunks (as the local executor batches): the
        # blocks spread over the decoding tasks and actors, and finished chunks come back early
        blocks = [np.arange(k, min(k + bs, r.stop), dtype=np.int64) for r in chunks.values()
                  for k in range(r.start, r.stop, bs)]
        ds = ray.data.from_numpy(blocks)
        actor_kw = dict(embedder=emb_ref, threads=plan["threads"])
        if plan["stages"] == "two":
            ds = ds.map_batches(_load_batch, fn_kwargs=dict(loader=loader, pool=pool_ref), batch_size=bs,
                                batch_format="numpy", num_cpus=self.task_cpus)
        else:
            actor_kw.update(loader=loader, pool=pool_ref)
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU" if use_gpu else "CPU")]
        ds = ds.map_batches(
            _ModelActor, fn_constructor_kwargs=actor_kw, batch_size=bs, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan["actors"], max_tasks_in_flight_per_actor=2),
            num_cpus=plan["actor_cpus"], num_gpus=1 if use_gpu else 0,
            ray_remote_args_fn=None if use_gpu else _RoundRobin(nodes))
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        for batch in _watched(ds.iter_batches(batch_size=None, batch_format="numpy"), ray, alive,
                              self.stall_timeout):
            r = batch["row"].astype(np.int64)
            errors = {int(i): str(e) for i, e in zip(r, batch["error"]) if e}
            node = str(batch["node"][0]) if len(r) else ""
            self.batches_per_node[node] = self.batches_per_node.get(node, 0) + 1
            yield r, batch["X"], errors


class _ClusterDriver:
    """Runs :meth:`RayExecutor._run_here` inside the cluster (an actor), for a Ray Client driver."""

    def __init__(self, executor, embedder, pool, chunks):
        import ray

        executor.batches_per_node = {}
        self.executor = executor
        self.batches = executor._run_here(ray, embedder, pool, chunks)

    def next(self, k: int):
        out = []
        for item in self.batches:
            out.append(item)
            if len(out) >= k:
                break
        return out, dict(self.executor.batches_per_node)


def _client_mode() -> bool:
    try:
        from ray.util.client import ray as client
    except ImportError:
        return False
    return bool(client.is_connected())


class _RoundRobin:
    """Remote args of the CPU model actors: each next actor prefers the next node (soft affinity:
    another node when that one is full or gone), so there is one actor per node."""

    def __init__(self, nodes):
        self.nodes, self.k = list(nodes), 0

    def __call__(self) -> dict:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not self.nodes:
            return {}
        node = self.nodes[self.k % len(self.nodes)]
        self.k += 1
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}


def _watched(batches, ray, alive: set, stall_timeout: float):
    """Yield from ``batches`` (read in a thread); raise when a node of ``alive`` has died and no batch
    came for ``stall_timeout`` seconds, or when Ray Data fails because of a dead node."""
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def pump():
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(("batch", b), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    close = getattr(batches, "close", None)
                    if close is not None:
                        close()  # shuts Ray Data's executor down now
                    return
            q.put(("end", done))
        except BaseException as e:  # noqa: BLE001 - handed to the driver's thread
            q.put(("error", e))

    thread = threading.Thread(target=pump, name="alwidgets-ray-batches", daemon=True)
    thread.start()
    last = time.monotonic()
    try:
        while True:
            try:
                kind, item = q.get(timeout=2.0)
            except queue.Empty:
                dead = alive - {n["NodeID"] for n in ray.nodes() if n["Alive"]}
                if dead and time.monotonic() - last > stall_timeout:
                    raise RuntimeError(
                        f"{len(dead)} Ray node(s) died during the run and no batch has finished for "
                        f"{stall_timeout:g} s; the finished shards are in the cache: run again to "
                        "compute only the missing ones") from None
                continue
            if kind == "end":
                return
            if kind == "error":
                dead = alive - {n["NodeID"] for n in ray.nodes() if n["Alive"]}
                if dead:
                    raise RuntimeError(f"{len(dead)} Ray node(s) died during the run ({type(item).__name__}: "
                                       f"{_first_line(item)}); the finished shards are in the cache: run "
                                       "again to compute only the missing ones") from item
                raise item
            last = time.monotonic()
            yield item
    finally:
        stop.set()


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _check_reachable(address, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` (or ``ray://HOST:PORT``) nobody listens on: Ray itself would
    retry for minutes before giving up."""
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
    """Stage 2 (a Ray actor): builds the model once, embeds every batch it is given. With ``loader``
    and ``pool`` (fused stages) it decodes the batch's rows itself first."""

    def __init__(self, embedder, threads: int = 1, loader=None, pool=None):
        import torch

        torch.set_num_threads(int(threads))  # Ray sets OMP_NUM_THREADS from num_cpus; say it explicitly
        self.embedder = _get(embedder)
        self.rt = self.embedder._runtime()
        self.loader, self.pool = _get(loader), _get(pool)
        import ray

        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        if self.loader is not None:
            batch = _load_batch(batch, self.loader, self.pool)
        X = self.embedder._forward_rows(self.rt, batch["pixels"])
        X[[bool(e) for e in batch["error"]]] = 0.0
        return {"row": batch["row"], "X": X.astype(np.float32), "error": batch["error"],
                "node": np.full(len(X), self.node, dtype=object)}


# ------------------------------------------------------------------ a cluster on this machine
_SLOW_IMPORT_STUB = '''"""Hidden from the processes of this Ray node by alwidgets.embed.ray.local_cluster(fast_imports=True).

rfc3987-syntax (an optional jsonschema extra that Jupyter pulls in) builds ~35 Earley parsers
when imported, 2-3 s of CPU in every Ray process (Ray imports jsonschema); without it jsonschema
just skips the "iri" string formats, which Ray does not use.
"""
raise ImportError("rfc3987_syntax is hidden from this Ray node (slow import)")
'''


class LocalCluster:
    """A Ray cluster of ``ray start`` nodes on 127.0.0.1, each in its own process group (see :func:`local_cluster`)."""

    def __init__(self, root: Path, env: dict, object_store_mb: int):
        self.root, self.env, self.object_store_mb = root, env, object_store_mb
        self.port = _free_port(avoid=range(10000, 20000))
        self.address = f"127.0.0.1:{self.port}"
        try:  # Ray Client (ray://) needs grpcio: pip install "ray[client]"
            import grpc  # noqa: F401
        except ImportError:
            self.client_port = None
        else:
            self.client_port = _free_port(avoid=range(10000, 20000))
        self.client_address = f"ray://127.0.0.1:{self.client_port}" if self.client_port else None
        self.nodes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def _args(self, num_cpus, resources, head: bool):
        args = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
                "--object-store-memory", str(self.object_store_mb * 2**20), "--disable-usage-stats"]
        # fixed agent ports, so two nodes on one machine never pick the same defaults
        for opt in ("--dashboard-agent-grpc-port", "--dashboard-agent-listen-port", "--metrics-export-port",
                    "--runtime-env-agent-port"):
            args += [opt, str(_free_port(avoid=range(10000, 20000)))]
        if resources:
            import json

            args += ["--resources", json.dumps(resources)]
        if head:
            args += ["--head", "--port", str(self.port), "--include-dashboard=false", "--temp-dir", str(self.root / "t")]
            if self.client_port:
                args += ["--ray-client-server-port", str(self.client_port)]
        else:
            args += ["--address", self.address]
        return args

    def start_node(self, num_cpus=1, resources=None, timeout: float = 120.0, tries: int = 3) -> subprocess.Popen:
        """Start one more node and wait until it is up. A node whose agents miss Ray's fixed start-up
        deadline (15 s in Ray 2.60, easily missed on a loaded 2-core machine) is retried."""
        head = not self.nodes
        for attempt in range(tries):
            log = self.root / f"node{len(self.nodes)}-{attempt}.log"
            cmd = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())",
                   "start", "--block", *self._args(num_cpus, resources, head)]
            with open(log, "w") as f:
                proc = subprocess.Popen(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")
                if "Ray runtime started" in text:
                    self.nodes.append(proc)
                    self.logs.append(log)
                    return proc
                if proc.poll() is not None or "Traceback" in text:
                    break
                time.sleep(0.5)
            _kill_group(proc, signal.SIGKILL)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        raise RuntimeError(f"a Ray node did not start in {tries} tries; the last try said:\n{tail}")

    def kill_node(self, i: int) -> None:
        """SIGKILL every process of node ``i`` (a machine dying)."""
        _kill_group(self.nodes[i], signal.SIGKILL)

    def stop(self) -> None:
        """Stop every node (workers first), SIGTERM then SIGKILL; remove the temporary folder."""
        for p in reversed(self.nodes):
            if p.poll() is None:
                _kill_group(p, signal.SIGTERM, wait=3)
            _kill_group(p, signal.SIGKILL)  # whatever of the group outlived ray start
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def local_cluster(nodes=(1, 1), object_store_mb: int = 100, resources=None, fast_imports: bool = True,
                  connect: bool = True, start_timeout: float = 120.0):
    """A Ray cluster of ``len(nodes)`` nodes on this machine (``ray start --head`` + ``ray start
    --address``), for trying ``executor="ray"`` and for the tests; every node is stopped on exit,
    also after an error.

    ``nodes``: CPUs of each node (the first is the head); ``resources``: a dict of custom resources
    per node (a list, one per node, or ``None``). Each node runs in its own process group and is
    stopped by it (never ``ray stop``, which would stop every Ray of the user). Token authentication
    is off (loopback only). With ``fast_imports``, the node processes do not import
    ``rfc3987_syntax`` (see ``_SLOW_IMPORT_STUB``). With ``connect``, this process is connected
    (``ray.init``) until exit. Yields the :class:`LocalCluster` (``.address``, ``.kill_node(i)``).
    """
    import alwidgets

    root = Path(tempfile.mkdtemp(prefix="alw-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    paths = [str(Path(alwidgets.__file__).resolve().parents[1])]
    if fast_imports:
        stub = root / "py" / "rfc3987_syntax"
        stub.mkdir(parents=True)
        (stub / "__init__.py").write_text(_SLOW_IMPORT_STUB)
        paths.insert(0, str(root / "py"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
               # a dead node is noticed after ~3 s instead of ~15-30 s (what kill_node() tests)
               RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3",
               PYTHONPATH=os.pathsep.join(paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    # Ray Client starts a server per connection: more than Ray's 30 s for it on a loaded machine
    env.setdefault("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "120")
    cluster = LocalCluster(root, env, object_store_mb)
    resources = resources if isinstance(resources, (list, tuple)) else [resources] * len(nodes)
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process talks to the cluster as its nodes do
    ray = None
    try:
        for cpus, res in zip(nodes, resources):
            cluster.start_node(cpus, res, timeout=start_timeout)
        if connect:
            import ray

            ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
            deadline = time.monotonic() + start_timeout
            while len([n for n in ray.nodes() if n["Alive"]]) < len(nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Ray cluster at {cluster.address} did not get {len(nodes)} nodes")
                time.sleep(0.5)
        yield cluster
    finally:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before


def _free_port(avoid=()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def _kill_group(proc: subprocess.Popen, sig, wait: float = 10.0) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
