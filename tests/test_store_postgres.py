"""PostgreSQL-only behaviour: what a team's server can do that a file cannot (lost connections,
restarts, roles, an unreachable server). Everything else runs on both back ends in test_store*.py."""
from __future__ import annotations

import threading
import time

import pytest

from alwidgets.store import (
    LabelStore,
    StoreConnectionError,
    StoreError,
    StoreLockedError,
    StoreReadOnlyError,
)
from store_backends import pg_server  # noqa: F401 (fixture)

IDS = [f"img-{i:03d}" for i in range(20)]
CLASSES = ["cat", "dog", "bird"]


def lab(item_id, label, **kw):
    return {"item_id": item_id, "label": label, **kw}


@pytest.fixture
def url(pg_server):
    return pg_server.new_schema()


@pytest.fixture
def store(url):
    with LabelStore(url, annotator="ana", timeout=5) as s:
        s.attach_pool(IDS, CLASSES)
        yield s


def _backend_pid(store) -> int:
    return store._connection().info.backend_pid


def test_path_hides_the_password_and_repr_works(pg_server):
    schema_url = pg_server.new_schema()
    secret = schema_url.replace("alw@", "alw:s3cret@")
    with LabelStore(secret) as s:  # trust auth ignores the password
        assert "s3cret" not in s.path and ":***@" in s.path and s.backend == "postgresql"
        s.attach_pool(IDS, CLASSES)
        assert "items=20" in repr(s)


def test_unreachable_server_is_a_clear_error(pg_server):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreConnectionError, match=rf"cannot connect to the label store postgresql://alw@127.0.0.1:{port}"):
        LabelStore(f"postgresql://alw@127.0.0.1:{port}/postgres", timeout=2)


def test_connection_killed_while_idle_reconnects(store, pg_server):
    store.add_labels([lab(IDS[0], "cat")])
    pg_server.sql("SELECT pg_terminate_backend(%s)", (_backend_pid(store),))
    time.sleep(0.2)
    assert store.current_labels() == {IDS[0]: "cat"}  # a read retries on a new connection
    pg_server.sql("SELECT pg_terminate_backend(%s)", (_backend_pid(store),))
    time.sleep(1.5)  # a write after a second idle checks its connection first
    assert store.add_labels([lab(IDS[1], "dog")]) == [2]  # so does a write that never started


def test_connection_lost_mid_submit_acknowledges_nothing(store, pg_server):
    """The server drops the connection after the submit wrote its rows, before COMMIT: an error that says
    nothing was acknowledged, nothing written, and the next submit works on a new connection."""
    import psycopg

    store.add_labels([lab(IDS[0], "cat")])
    schema = store._connection().execute("SELECT current_schema()").fetchone()[0]
    admin = psycopg.connect(pg_server.url(schema), autocommit=True)
    admin.execute("BEGIN")
    admin.execute("UPDATE changes SET n = n")  # the submit's last statement before COMMIT waits for this row
    outcome = {}

    def submit():
        try:
            outcome["ids"] = store.add_labels([lab(IDS[1], "dog"), lab(IDS[2], "bird")], session="k1")
        except StoreError as e:
            outcome["error"] = e

    pid = _backend_pid(store)
    t = threading.Thread(target=submit)
    t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not pg_server.sql(  # a fresh connection: activity is snapshotted
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock' "
            "AND query LIKE 'UPDATE changes%%'", (pid,)):
        time.sleep(0.02)
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    t.join(10)
    admin.execute("ROLLBACK")
    admin.close()
    assert "ids" not in outcome
    err = outcome["error"]
    assert isinstance(err, StoreConnectionError), err
    assert "was lost" in str(err) and "nothing from this call was acknowledged" in str(err)
    assert store.current_labels() == {IDS[0]: "cat"}
    assert store.add_labels([lab(IDS[1], "dog"), lab(IDS[2], "bird")], session="k1") == [2, 3]


def test_connection_lost_while_waiting_for_the_lock(store, pg_server):
    """Killed while its transaction waits for the write lock, a submit says nothing was acknowledged;
    the next one reconnects."""
    import psycopg

    schema = store._connection().execute("SELECT current_schema()").fetchone()[0]
    admin = psycopg.connect(pg_server.url(schema), autocommit=True)
    admin.execute("BEGIN")
    admin.execute("SELECT pg_advisory_xact_lock(%s)", (0x616C77,))  # hold the store's write lock
    outcome = {}

    def submit():
        try:
            outcome["ids"] = store.add_labels([lab(IDS[1], "dog")])
        except StoreError as e:
            outcome["error"] = e

    pid = _backend_pid(store)
    t = threading.Thread(target=submit)
    t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not pg_server.sql(
            "SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted", (pid,)):
        time.sleep(0.02)
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    t.join(10)
    admin.execute("ROLLBACK")
    admin.close()
    assert isinstance(outcome.get("error"), StoreConnectionError), outcome
    assert store.current_labels() == {}
    assert store.add_labels([lab(IDS[1], "dog")]) == [1]


def test_write_lock_timeout(url, pg_server):
    with LabelStore(url, timeout=0.3) as s:
        s.attach_pool(IDS, CLASSES)
        import psycopg

        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("BEGIN")
            admin.execute("SELECT pg_advisory_xact_lock(%s)", (0x616C77,))
            with pytest.raises(StoreLockedError, match="locked by another writer.*nothing from this call was written"):
                s.add_labels([lab(IDS[0], "cat")])
            admin.execute("ROLLBACK")
        assert s.add_labels([lab(IDS[0], "cat")]) == [1]


def test_read_only_role_reads_but_cannot_write(store, pg_server):
    store.add_labels([lab(IDS[0], "cat")])
    schema = store._connection().execute("SELECT current_schema()").fetchone()[0]
    pg_server.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'viewer') THEN "
                  "CREATE ROLE viewer LOGIN; END IF; END $$")
    pg_server.sql(f"GRANT USAGE ON SCHEMA {schema} TO viewer")
    pg_server.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO viewer")
    with LabelStore(pg_server.url(schema, user="viewer")) as viewer:
        assert viewer.current_labels() == {IDS[0]: "cat"}
        with pytest.raises(StoreReadOnlyError, match="read-only for this role.*nothing from this call was written"):
            viewer.add_labels([lab(IDS[1], "dog")])
        with pytest.raises(StoreReadOnlyError):
            viewer.lease(IDS[:2], session="v")
        assert viewer.current_labels() == {IDS[0]: "cat"}
    assert store.add_labels([lab(IDS[1], "dog")]) == [2]


def test_server_restart_keeps_every_label_and_the_store_reconnects(store, pg_server):
    store.lease(IDS[:4], session="k1")
    acked = store.add_labels([lab(i, "cat") for i in IDS[:4]], session="k1")
    pg_server.restart()
    assert store.current_labels() == {i: "cat" for i in IDS[:4]}
    assert store.add_labels([lab(IDS[4], "dog")], session="k1") == [acked[-1] + 1]
    pg_server.stop()  # the server is down (an immediate stop: as a crash) during the next submit
    try:
        with pytest.raises(StoreConnectionError, match="nothing from this call was (written|acknowledged)"):
            store.add_labels([lab(IDS[5], "dog")], session="k1")
    finally:
        pg_server.start()
    assert store.current_labels() == {**{i: "cat" for i in IDS[:4]}, IDS[4]: "dog"}  # every acknowledged label
    assert store.add_labels([lab(IDS[5], "dog")], session="k1") == [acked[-1] + 2]
    assert store.check() == []
