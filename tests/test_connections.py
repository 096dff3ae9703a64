"""Request connections: a SQLite one stays with its thread, and never outlives its database."""

import threading

from mdm import create_app
from mdm.db import _close
from mdm.db import _connect
from mdm.db import database
from tests.conftest import ScimClient
from tests.conftest import issue_token


def sqlite_app(path):
    # Always SQLite, in the PostgreSQL pass too: these check a file's pool.
    path.mkdir(exist_ok=True)
    return create_app(
        {"TESTING": True, "SECRET_KEY": "test", "DATABASE": str(path / "mdm.sqlite")}
    )


def user(name):
    schema = "urn:ietf:params:scim:schemas:core:2.0:User"
    return {"schemas": [schema], "userName": name}


def names(scim):
    return [r["userName"] for r in scim.get("/Users").get_json()["Resources"]]


def test_a_thread_keeps_its_connection_between_requests(tmp_path):
    app = sqlite_app(tmp_path)
    _, secret = issue_token(app)
    scim = ScimClient(app.test_client(), secret)
    assert scim.get("/Users").status_code == 200
    assert not database.is_closed()  # kept open after the request
    first = database.connection()
    assert scim.post("/Users", user("kim@example.com")).status_code == 201
    assert database.connection() is first
    assert names(scim) == ["kim@example.com"]
    database.close()


def test_a_kept_connection_never_reads_the_previous_database(tmp_path):
    """Binding another file makes a new pool; each thread then opens anew."""
    first = sqlite_app(tmp_path / "a")
    _, secret = issue_token(first)
    scim = ScimClient(first.test_client(), secret)
    assert scim.post("/Users", user("first@example.com")).status_code == 201

    # Another thread keeps a connection to the first file too.
    results = []

    def request_in_thread(app, secret):
        results.append(names(ScimClient(app.test_client(), secret)))

    worker = threading.Thread(target=request_in_thread, args=(first, secret))
    worker.start()
    worker.join()
    assert results == [["first@example.com"]]

    second = sqlite_app(tmp_path / "b")  # binds the same handle to a new file
    _, other = issue_token(second)
    scim = ScimClient(second.test_client(), other)
    assert scim.post("/Users", user("second@example.com")).status_code == 201
    assert names(scim) == ["second@example.com"]

    # A thread that kept a connection to the second file, then a third is bound.
    kept, bound = threading.Event(), threading.Event()

    def keep_then_request():
        with second.test_request_context("/scim/v2/Users"):
            _connect()
            _close(None)
        assert not database.is_closed()
        kept.set()
        bound.wait(10)
        results.append(names(ScimClient(third.test_client(), third_secret)))

    worker = threading.Thread(target=keep_then_request)
    worker.start()
    assert kept.wait(10)
    third = sqlite_app(tmp_path / "c")
    _, third_secret = issue_token(third)
    ScimClient(third.test_client(), third_secret).post("/Users", user("c@example.com"))
    bound.set()
    worker.join()
    assert results[-1] == ["c@example.com"]
    database.close()


def test_a_failed_request_returns_its_connection(tmp_path):
    app = sqlite_app(tmp_path)
    with app.test_request_context("/scim/v2/Users"):
        _connect()
        assert not database.is_closed()
        _close(RuntimeError("the view raised"))
        assert database.is_closed()


def test_a_transaction_left_open_is_rolled_back(tmp_path):
    app = sqlite_app(tmp_path)
    with app.test_request_context("/scim/v2/Users"):
        _connect()
        conn = database.connection()
        conn.execute("BEGIN")
        _close(None)
        assert database.is_closed()
        assert not conn.in_transaction  # the pool rolled it back on its return


def test_connection_context_after_a_request_still_closes(tmp_path):
    app = sqlite_app(tmp_path)
    _, secret = issue_token(app)
    scim = ScimClient(app.test_client(), secret)
    assert scim.get("/Users").status_code == 200
    with database.connection_context():
        database.execute_sql("SELECT 1")
    assert database.is_closed()
    assert scim.get("/Users").status_code == 200  # opens a new one
    database.close()
