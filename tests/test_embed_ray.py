"""executor="ray": the same embeddings as the local executor, on a real 2-node Ray cluster on 127.0.0.1.

The cluster comes from :func:`alwidgets.embed.ray.local_cluster`: ``ray start --head`` plus a
second ``ray start --address`` node with its own resources, each in its own process group,
stopped by process group at the end (also when a test fails), never with ``ray stop`` (which
would stop every Ray of the user on the machine). Locally these tests skip when Ray is not
installed; under CI (``CI`` set) they fail instead: ``.ci/run`` installs the ``ray`` extra.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

from alwidgets import Pool
from alwidgets.embed import TimmEmbedder
from conftest import require

try:
    import ray
except ImportError:
    ray = None

pytestmark = [
    pytest.mark.slow,  # a cluster takes ~20-30 s to start on 2 cores, each Ray run ~10-20 s
    pytest.mark.ray,
    pytest.mark.skipif(ray is None and not os.environ.get("CI"),
                       reason='Ray is not installed (pip install "alwidgets[ray]")'),
]

TINY = dict(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear")


@pytest.fixture(scope="module")
def cluster():
    """Head (2 CPUs) + worker (1 CPU, resource ``second_node``) on 127.0.0.1, small object stores.

    The head has room for both model actors and a decoding task, so the run can go on there when
    the worker node is killed.
    """
    require(ray is not None, 'Ray is not installed (pip install "alwidgets[ray]")')
    from alwidgets.embed.ray import local_cluster

    with local_cluster(nodes=(2, 1), resources=[None, {"second_node": 1}], object_store_mb=100) as c:
        yield c


@pytest.fixture
def connected(cluster):
    """The driver connected to the module's cluster (a test before may have disconnected it)."""
    if ray.is_initialized() and ray.get_runtime_context().gcs_address != cluster.address:
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
    return cluster


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(3)
    for c in ("a", "b"):
        (root / c).mkdir()
        for k in range(12):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{k}.jpg", quality=90)
    bad = root / "a" / "5.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # a valid header, unreadable when decoded
    return root


def make(ckpt, **kw):
    kw = dict(dict(checkpoint=ckpt, pretrained_cfg_overlay=TINY, progress=False, num_workers=0, device="cpu",
                   batch_size=5, cache_dir=False, decode="pil"), **kw)
    return TimmEmbedder("resnet10t", **kw)


@pytest.fixture(scope="module")
def ref(folder, ckpt):
    """The local embedding of ``folder`` (decode="pil", as on Ray)."""
    pool = Pool.from_folder(folder, on_error="skip")
    return make(ckpt).embed(pool), pool.errors


def test_ray_cluster_gives_the_local_embeddings_and_errors(connected, folder, ckpt, ref):
    from alwidgets.embed.ray import RayExecutor

    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2 and sum(n["Resources"].get("second_node", 0) for n in alive) == 1
    # CPU-only: fused stages, one actor per node; two stages (tested below) leave room for a
    # decoding task per node
    assert RayExecutor().plan(use_gpu=False) == dict(stages="fused", actors=2, actor_cpus=1.0, threads=1)
    assert RayExecutor(stages="two").plan(use_gpu=False) == dict(stages="two", actors=2, actor_cpus=0.5, threads=1)
    pool = Pool.from_folder(folder, on_error="skip")
    ex = RayExecutor()
    X = make(ckpt).embed(pool, executor=ex)
    assert set(ex.batches_per_node) == {n["NodeID"] for n in alive}   # both nodes computed batches
    assert X.shape == ref[0].shape and X.dtype == np.float32
    np.testing.assert_allclose(X, ref[0], rtol=1e-4, atol=1e-5)
    assert pool.errors == ref[1] and list(pool.errors) == ["a/5.jpg"]
    assert np.all(X[pool.index_of("a/5.jpg")] == 0)


def test_ray_resumes_by_shard_and_recomputes_a_truncated_one(connected, folder, ckpt, ref, tmp_path):
    """A run stopped after two batches leaves finished shards (cache chunks) under the local cache
    key; one of them is then cut short on disk. The next run computes only the missing shards and
    the truncated one, and the entry is a cache hit for the local executor. (Two stages here:
    decoding tasks, then model actors; the other tests run the default, fused, stages.)"""
    from alwidgets.embed.ray import RayExecutor

    seen = []

    class Interrupted(RayExecutor):
        """Stops the driver after ``stop_after`` batches, like a killed run."""

        stop_after = None

        def run(self, embedder, pool, chunks):
            seen.append(sorted(chunks))
            for k, item in enumerate(super().run(embedder, pool, chunks)):
                if self.stop_after is not None and k == self.stop_after:
                    raise KeyboardInterrupt("simulated interruption")
                yield item

    emb = make(ckpt, cache_dir=tmp_path)
    emb.cache_chunk = 5  # 24 rows: chunks 0-4, one batch each
    ex = Interrupted(stages="two", num_actors=1)   # one model process to start per run: cheaper
    ex.stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        emb.embed(Pool.from_folder(folder, on_error="skip"), executor=ex)
    (entry,) = tmp_path.iterdir()
    done = sorted(entry.glob("chunk5-*.npz"))  # Ray Data may bundle two blocks into one batch
    assert 1 <= len(done) <= 4 and not list(entry.glob("*.tmp*"))
    data = done[0].read_bytes()
    done[0].write_bytes(data[: len(data) - 300])  # cut short on disk
    ex.stop_after = None
    pool = Pool.from_folder(folder, on_error="skip")
    X = emb.embed(pool, executor=ex)
    assert len(seen[1]) == 5 - len(done) + 1  # the missing shards and the truncated one, not the intact ones
    np.testing.assert_allclose(X, ref[0], rtol=1e-4, atol=1e-5)
    assert pool.errors == ref[1]
    assert np.array_equal(make(ckpt, cache_dir=tmp_path).embed(Pool.from_folder(folder, on_error="skip")), X)


def test_ray_bad_inputs(connected, ckpt):
    from alwidgets.embed import PixelEmbedder
    from alwidgets.embed.ray import RayExecutor

    with pytest.raises(TypeError, match="cannot run on Ray"):
        PixelEmbedder().embed(Pool.digits().subset(range(4)), executor="ray")
    with pytest.raises(ValueError, match="decode='device' runs inside one machine"):
        make(ckpt, decode="device").embed(Pool.digits().subset(range(4)), executor="ray")
    with pytest.raises(RuntimeError, match="has no GPUs"):
        make(ckpt, device="cuda", precision="fp32").embed(Pool.digits().subset(range(4)), executor=RayExecutor())
    with pytest.raises(ValueError, match=r"3 actors x 1 CPUs \+ a decoding task \(0.5 CPUs\) do not fit a cluster of 3"):
        make(ckpt).embed(Pool.digits().subset(range(4)), executor=RayExecutor(stages="two", num_actors=3, actor_cpus=1))
    with pytest.raises(ValueError, match="stages must be"):
        RayExecutor(stages="three")


def test_cli_engine_ray_address(cluster, folder, ckpt, ref, tmp_path, capsys):
    """``alwidgets embed --engine ray --address ADDR`` connects to the cluster at ADDR (Ray Client's
    ``ray://`` address when grpcio is installed, else the GCS address) and writes the local result."""
    import json

    from alwidgets.cli import main

    if ray.is_initialized():
        ray.shutdown()   # the CLI connects by itself, to the address it is given
    good = tmp_path / "good"   # the CLI refuses unreadable images: the folder without a/5.jpg
    for p in folder.rglob("*.jpg"):
        if p.name != "5.jpg" or p.parent.name != "a":
            (good / p.parent.name).mkdir(parents=True, exist_ok=True)
            (good / p.parent.name / p.name).symlink_to(p)
    address = cluster.client_address or cluster.address
    out = tmp_path / "x.npz"
    code = main(["embed", "--engine", "ray", "--address", address, "--dataset", f"folder:{good}",
                 "--embedder", "timm:resnet10t", "--checkpoint", str(ckpt), "--device", "cpu",
                 "--pretrained-cfg", json.dumps(dict(TINY, input_size=list(TINY["input_size"]))),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    if ray.is_initialized():
        ray.shutdown()
    full = Pool.from_folder(folder, on_error="skip")
    with np.load(out) as f:
        ids = f["ids"].tolist()
        assert ids == Pool.from_folder(good).ids and len(ids) == 23
        np.testing.assert_allclose(f["X"], ref[0][[full.index_of(i) for i in ids]], rtol=1e-4, atol=1e-5)


def test_worker_node_killed_mid_run_never_gives_a_short_array(connected, folder, ckpt, ref, tmp_path):
    """SIGKILL the worker node (its raylet and every worker process) once the first batch is back.

    Ray Data restarts the lost actor and retries the lost tasks on the head: the run completes
    with the local result. Were the run to fail instead, it must say so, and a rerun resumes from
    the saved shards; in no case is the array short or misaligned.
    """
    from alwidgets.embed.ray import RayExecutor

    worker = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("second_node"))

    class KillWorker(RayExecutor):
        """Kills the worker node once its actor has computed a batch (it holds more in flight)."""

        killed = False

        def run(self, embedder, pool, chunks):
            for item in super().run(embedder, pool, chunks):
                if not self.killed and self.batches_per_node.get(worker):
                    connected.kill_node(1)
                    self.killed = True
                yield item

    emb = make(ckpt, cache_dir=tmp_path, batch_size=2)   # 12 batches: the worker's actor has some queued
    emb.cache_chunk = 4
    pool = Pool.from_folder(folder, on_error="skip")
    t = time.monotonic()
    ex = KillWorker(stall_timeout=60)
    try:
        X = emb.embed(pool, executor=ex)
    except RuntimeError as e:  # the other acceptable outcome: a clear error, then a resumed run
        assert "died during the run" in str(e), e
        X = emb.embed(pool, executor=RayExecutor())
    assert ex.killed, "the worker node computed no batch before the head finished: nothing was tested"
    assert time.monotonic() - t < 300
    assert X.shape == ref[0].shape
    np.testing.assert_allclose(X, ref[0], rtol=1e-4, atol=1e-5)
    assert pool.errors == ref[1]


def test_unreachable_address_is_a_clear_error(ckpt):
    from alwidgets.embed.ray import RayExecutor

    require(ray is not None, 'Ray is not installed (pip install "alwidgets[ray]")')
    if ray.is_initialized():
        ray.shutdown()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(ConnectionError, match=f"cannot connect to the Ray cluster at '{address}'"):
            make(ckpt).embed(Pool.digits().subset(range(4)), executor=RayExecutor(address=address))
    assert not ray.is_initialized()


def test_failed_client_connect_leaves_ray_usable(cluster, ckpt, monkeypatch):
    """A ``ray://`` address that accepts the connection but never answers (a wrong port, a server
    that hangs): a clear ConnectionError, and this process can connect to a cluster afterwards
    (a failed Ray Client connect used to leave it in client mode, where every ray.init() failed)."""
    import socket
    import threading

    import ray._private.client_mode_hook as client_mode
    import ray.util.client.worker as client_worker

    from alwidgets.embed.ray import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setattr(client_worker, "INITIAL_TIMEOUT_SEC", 1)   # Ray's first wait (5 s); it still gives up after ~25-30 s
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def accept_and_drop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept_and_drop, daemon=True).start()
    address = f"ray://127.0.0.1:{server.getsockname()[1]}"
    try:
        with pytest.raises(ConnectionError, match=f"cannot connect to the Ray cluster at '{address}'"):
            make(ckpt).embed(Pool.digits().subset(range(4)), executor=RayExecutor(address=address))
    finally:
        server.close()
    assert not ray.is_initialized() and not client_mode.is_client_mode_enabled
    X = make(ckpt).embed(Pool.digits().subset(range(4)), executor=RayExecutor(address=cluster.address))
    assert X.shape == (4, 512) and ray.is_initialized()


def test_client_server_start_failure_is_tried_once_more(cluster, ckpt, monkeypatch):
    """Ray Client's "Initialization failure from server" (its per-connection server did not start on
    a loaded head) gets one more try; other connection errors none."""
    from alwidgets.embed.ray import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    real_init, calls = ray.init, []

    def flaky_init(*args, **kwargs):
        calls.append(kwargs.get("address"))
        if len(calls) == 1:
            raise failure
        return real_init(*args, **kwargs)

    monkeypatch.setattr(ray, "init", flaky_init)
    failure = ConnectionAbortedError("Initialization failure from server:\n")
    with pytest.warns(RuntimeWarning, match="did not start a Ray Client server .* trying once more"):
        X = make(ckpt).embed(Pool.digits().subset(range(4)), executor=RayExecutor(address=cluster.address))
    assert X.shape == (4, 512) and calls == [cluster.address] * 2
    ray.shutdown()
    calls.clear()
    failure = ConnectionError("GCS did not answer")
    with pytest.raises(ConnectionError, match="GCS did not answer"):
        make(ckpt).embed(Pool.digits().subset(range(4)), executor=RayExecutor(address=cluster.address))
    assert calls == [cluster.address] and not ray.is_initialized()


def test_plain_local_ray_init(ckpt, folder, ref, tmp_path, monkeypatch):
    """A plain local ray.init() (no cluster): the executor uses the Ray already initialised."""
    from alwidgets.embed.ray import RayExecutor

    require(ray is not None, 'Ray is not installed (pip install "alwidgets[ray]")')
    if ray.is_initialized():
        ray.shutdown()
    # the processes of this local Ray see the checkout and skip a slow import, as local_cluster()'s do
    from alwidgets.embed.ray import _SLOW_IMPORT_STUB

    (tmp_path / "py" / "rfc3987_syntax").mkdir(parents=True)
    (tmp_path / "py" / "rfc3987_syntax" / "__init__.py").write_text(_SLOW_IMPORT_STUB)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "py"), repo, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    try:
        try:
            ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
                     log_to_driver=False)
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception when its node misses the start-up timeout
            require(False, f"ray.init() did not start a local Ray: {e}")
        assert RayExecutor().plan(use_gpu=False) == dict(stages="fused", actors=1, actor_cpus=2.0, threads=2)
        pool = Pool.from_folder(folder, on_error="skip")
        X = make(ckpt).embed(pool, executor=RayExecutor())  # uses the running ray.init()
        np.testing.assert_allclose(X, ref[0], rtol=1e-4, atol=1e-5)
        assert list(pool.errors) == ["a/5.jpg"]
    finally:
        ray.shutdown()
