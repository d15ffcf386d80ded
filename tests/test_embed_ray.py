"""executor="ray": the same embeddings as the local executor, on a real 2-node Ray cluster on 127.0.0.1.

The nodes are started with ``ray start --block`` in their own process groups and stopped by
process group at the end (also when a test fails), never with ``ray stop`` (which would stop
every Ray process of the user on the machine).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alwidgets import Pool
from alwidgets.embed import TimmEmbedder
from conftest import require

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "alwidgets[ray]")')

REPO = Path(__file__).resolve().parents[1]
TINY = dict(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear")
pytestmark = pytest.mark.slow  # a cluster takes ~20 s to start on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, log):
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               RAY_USAGE_STATS_ENABLED="0",
               # a loaded 2-core machine starts the node's agents slowly; the default wait is 15 s
               RAY_agent_register_timeout_ms="180000", RAY_raylet_start_wait_time_s="180")
    ray_bin = str(Path(sys.executable).parent / "ray")
    return subprocess.Popen([ray_bin, "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # ray start --block stops its node's processes on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_nodes(address, n, procs, logs, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a Ray node exited with code {p.returncode}; see {logs} and /tmp/ray/session_latest/logs")
        try:
            if not ray.is_initialized():
                ray.init(address=address, log_to_driver=False, include_dashboard=False)
            alive = [nd for nd in ray.nodes() if nd["Alive"]]
            if len(alive) >= n:
                return
        except ConnectionError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the Ray cluster at {address} did not get {n} nodes in {timeout} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and a worker node (1 CPU each, small object stores) on 127.0.0.1."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("ray-logs")
    procs = []
    def node_args():
        # fixed agent ports: otherwise the raylet waits for the agents to write theirs, only 15 s,
        # which a loaded 2-core machine can miss
        ports = {opt: str(_free_port()) for opt in ("--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
                                                   "--metrics-export-port", "--runtime-env-agent-port")}
        return ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", str(100 * 2**20),
                *[x for kv in ports.items() for x in kv]]

    try:
        try:
            with open(logs / "head.log", "w") as log:
                procs.append(_start(["--head", "--port", str(port), "--include-dashboard=false", *node_args()], log))
            _wait_for_nodes(address, 1, procs, logs)
            with open(logs / "worker.log", "w") as log:
                procs.append(_start(["--address", address, *node_args(), "--resources", '{"second_node": 1}'], log))
            _wait_for_nodes(address, 2, procs, logs)
        except (RuntimeError, TimeoutError) as e:
            # Ray gives a node's agents 15 s to start; a heavily loaded 2-core machine can miss that
            require(False, f"the 2-node Ray cluster did not start: {e}")
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(procs):
            _stop(p)


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
                   batch_size=5, cache_dir=False), **kw)
    return TimmEmbedder("resnet10t", **kw)


def test_ray_cluster_gives_the_local_embeddings_and_errors(cluster, folder, ckpt):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    local_pool, ray_pool = Pool.from_folder(folder, on_error="skip"), Pool.from_folder(folder, on_error="skip")
    ref = make(ckpt).embed(local_pool)
    X = make(ckpt).embed(ray_pool, executor="ray")
    assert X.shape == ref.shape and X.dtype == np.float32
    np.testing.assert_allclose(X, ref, rtol=1e-4, atol=1e-5)
    assert ray_pool.errors == local_pool.errors and list(ray_pool.errors) == ["a/5.jpg"]
    assert np.all(X[ray_pool.index_of("a/5.jpg")] == 0)


def test_ray_resumes_by_shard_under_the_local_cache_key(cluster, folder, ckpt, tmp_path):
    from alwidgets.embed.ray import RayExecutor

    seen = []

    class Interrupted(RayExecutor):
        """Stops the driver after two batches, like a killed run."""

        def run(self, embedder, pool, chunks):
            seen.append(sorted(chunks))
            for k, item in enumerate(super().run(embedder, pool, chunks)):
                if self.stop_after is not None and k == self.stop_after:
                    raise KeyboardInterrupt("simulated interruption")
                yield item

    emb = make(ckpt, cache_dir=tmp_path, decode="pil")
    emb.cache_chunk = 5  # 24 rows: chunks 0-4
    ex = Interrupted(batch_size=5)
    ex.stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        emb.embed(Pool.from_folder(folder, on_error="skip"), executor=ex)
    (entry,) = tmp_path.iterdir()
    done = sorted(p.name for p in entry.iterdir())
    assert 1 <= len(done) < 5 and all(n.startswith("chunk5-") for n in done)
    ex.stop_after = None
    X = emb.embed(Pool.from_folder(folder, on_error="skip"), executor=ex)
    assert len(seen[1]) == 5 - len(done)  # only the missing shards were computed
    # the same entry is a hit for the local executor, and equals a local run
    ref = make(ckpt, decode="pil").embed(Pool.from_folder(folder, on_error="skip"))
    np.testing.assert_allclose(X, ref, rtol=1e-4, atol=1e-5)
    assert np.array_equal(make(ckpt, cache_dir=tmp_path, decode="pil").embed(Pool.from_folder(folder, on_error="skip")), X)


def test_ray_bad_inputs(cluster, ckpt):
    from alwidgets.embed import PixelEmbedder
    from alwidgets.embed.ray import RayExecutor

    with pytest.raises(TypeError, match="cannot run on Ray"):
        PixelEmbedder().embed(Pool.digits().subset(range(4)), executor="ray")
    with pytest.raises(ValueError, match="decode='device' runs inside one machine"):
        make(ckpt, decode="device").embed(Pool.digits().subset(range(4)), executor="ray")
    with pytest.raises(RuntimeError, match="has no GPUs"):
        make(ckpt, device="cuda", precision="fp32").embed(Pool.digits().subset(range(4)), executor=RayExecutor())


def test_unreachable_address_is_a_clear_error(ckpt):
    from alwidgets.embed.ray import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    with pytest.raises(ConnectionError, match="cannot connect to the Ray cluster at '127.0.0.1:1'"):
        make(ckpt).embed(Pool.digits().subset(range(4)), executor=RayExecutor(address="127.0.0.1:1"))


def test_plain_local_ray_init(ckpt, folder):
    """A plain local ray.init() (no cluster): the executor uses the Ray already initialised."""
    from alwidgets.embed.ray import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    try:
        try:
            ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception when its node misses the start-up timeout
            require(False, f"ray.init() did not start a local Ray: {e}")
        pool = Pool.from_folder(folder, on_error="skip")
        X = make(ckpt).embed(pool, executor=RayExecutor(num_actors=1))  # uses the running ray.init()
        ref = make(ckpt).embed(Pool.from_folder(folder, on_error="skip"))
        np.testing.assert_allclose(X, ref, rtol=1e-4, atol=1e-5)
        assert list(pool.errors) == ["a/5.jpg"]
    finally:
        ray.shutdown()
