"""PostgreSQL-only behaviour: what a team's server can do that a file cannot (lost connections,
restarts, roles, an unreachable server). Everything else runs on both back ends in test_store*.py."""
from __future__ import annotations

import threading
import time

import pandas as pd
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
    admin.execute("UPDATE changes SET n = n")  # a submit's last write before COMMIT waits for this row
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
            "AND (query LIKE 'UPDATE changes%%' OR query LIKE 'SELECT alwidgets_submit(%%')", (pid,)):
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


def _scripted_team(store) -> list:
    """Every kind of submit add_labels answers: new labels, relabels, resubmits, payloads, rounds, undos,
    skip_unchanged, a repeated item, bad input and both lease conflicts; what each call returned or raised."""
    out = []

    def do(fn, *args, **kw):
        try:
            out.append(fn(*args, **kw))
        except (ValueError, StoreError) as e:
            out.append((type(e).__name__, str(e).replace(store.path, "STORE")))

    a, b, c, d, e, f, g, h = IDS[:8]
    do(store.lease, [a, b, c], session="s1")
    do(store.lease, [d, h], session="s2")
    do(store.add_labels, [lab(a, "cat", seconds=1.5), lab(b, "dog")], session="s1")
    do(store.add_labels, [lab(a, "cat", seconds=1.5)], session="s1")          # a resubmit: the same id
    do(store.add_labels, [lab(a, "dog")], session="s1")                       # a relabel
    do(store.add_labels, [lab(a, "cat", annotator="bo", source="accepted")], session="s2")
    do(store.add_labels, [lab(a, "bird")], session="s1")                      # relabelled since shown
    do(store.add_labels, [lab(h, "bird")], session="s1")                      # leased to s2
    do(store.add_labels, [{"item_id": c, "label": None, "payload": b"\x89PNG", "media_type": "image/png"}],
       session="s1")
    do(store.add_labels, [{"item_id": c, "label": None, "payload": b"\x89PNG", "media_type": "image/png"}],
       session="s1")                                                            # the same payload again
    rnd = store.start_round("random")
    do(store.add_labels, [lab(e, "cat", round=rnd, source="simulated")])
    do(store.add_labels, [lab(e, "cat"), lab(f, "dog")], skip_unchanged=True)
    do(store.add_labels, [lab(f, "dog")])                                      # unchanged, but no session
    do(store.add_labels, [lab(g, "cat"), lab(g, "dog")], session="s3")         # one item twice
    do(store.add_labels, [lab("nope", "cat")])
    do(store.add_labels, [lab(g, "wolf")])
    do(store.add_labels, [lab(g, "cat", round=99)])
    do(store.undo, e)
    do(store.add_labels, [lab(e, "dog", seconds=0.0)], session="s1")           # after an undo
    do(store.add_labels, [lab(d, "cat"), lab(b, "cat")], session="s2")
    do(store.add_labels, [lab(i, "bird") for i in IDS[8:]], session="s4")
    return out


def test_one_statement_submit_writes_exactly_what_the_general_path_writes(pg_server):
    """On PostgreSQL a plain submit is one statement (the schema's alwidgets_submit); anything else is
    left to the general path. Both ways, every answer, error, history row, lease and the change counter
    are the same."""
    import re

    results, calls = {}, {}
    for fast in (True, False):
        with LabelStore(pg_server.new_schema(), annotator="ana") as s:
            s.attach_pool(IDS, CLASSES)
            db = s._backend()
            db.submits_in_one_statement = fast
            submit, calls[fast] = db.submit, []
            db.submit = lambda *a: calls[fast].append(submit(*a)) or calls[fast][-1]
            answers = _scripted_team(s)
            hist = s.labels_df(history=True).drop(columns="created_at")
            created = [r[0] for r in s._connection().execute("SELECT created_at FROM labels")]
            assert created and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", c) for c in created)
            leases = s._connection().execute(
                "SELECT item_id, session, annotator, after_label, expires_at > EXTRACT(EPOCH FROM now()) "
                "FROM leases ORDER BY item_id, session").fetchall()
            results[fast] = (answers, hist, leases, s.changes, s.check())
    assert calls[False] == []
    # the first new id of each one-statement submit; None: a resubmit, a lease conflict, an unchanged label
    # under skip_unchanged, bad input (nothing written, the general path answers); the repeated item never asks
    assert calls[True] == [1, None, 3, 4, None, None, 5, None, 6, None, 8, None, None, None, 12, 13, 15]
    (answers, hist, leases, changes, problems), general = results[True], results[False]
    assert answers == general[0]
    pd.testing.assert_frame_equal(hist, general[1])
    assert leases == general[2] and changes == general[3] and problems == general[4] == []
    assert any(isinstance(x, tuple) and x[0] == "LeaseConflictError" for x in answers)


def test_v2_database_upgrades_to_v3(url, pg_server):
    """A database created at v2 (before the submit function) gets the function when first opened."""
    with LabelStore(url) as s:
        s.attach_pool(IDS, CLASSES)
        s.add_labels([lab(IDS[0], "cat")])
        conn = s._connection()
        conn.execute("DROP FUNCTION alwidgets_submit")
        conn.execute("DELETE FROM schema_version WHERE version = 3")
    with LabelStore(url) as s:
        conn = s._connection()
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [2, 3]
        assert s._backend().submit(None, False, [(IDS[1], "dog", None, None, "human", "ana", None, None)]) == 2
        assert s.current_labels() == {IDS[0]: "cat", IDS[1]: "dog"} and s.check() == []
