"""The protocol state machine driven with byte fixtures (no sockets, no threads)."""

from __future__ import annotations

import struct

import pytest
import scramp
from wire_helpers import PASSWORD, Driver, FakeEngine, error_fields_of

from privsql.server import messages as m
from privsql.server.auth import Authenticator
from privsql.server.catalog import ShadowCatalog, schema_from_config
from privsql.server.executor import Executor
from privsql.server.protocol import Connection
from privsql.server.router import Router
from privsql.server.settings import load_settings


def startup(user: str = "alice", **params: str) -> bytes:
    body = struct.pack("!i", m.PROTOCOL_3_0)
    for k, v in {"user": user, "database": "privsql", **params}.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def query(sql: str) -> bytes:
    return msg(b"Q", sql.encode() + b"\0")


def parse(sql: str, name: str = "", types: tuple[int, ...] = ()) -> bytes:
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack(f"!h{len(types)}I", len(types), *types))


def bind(params: list[bytes | None] = (), portal: str = "", stmt: str = "", result_formats: tuple[int, ...] = ()) -> bytes:
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    body += struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats)
    return msg(b"B", body)


def describe(kind: str, name: str = "") -> bytes:
    return msg(b"D", kind.encode() + name.encode() + b"\0")


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return msg(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


SYNC = msg(b"S")


def kinds(replies: list[tuple[bytes, bytes]]) -> str:
    return "".join(k.decode() for k, _ in replies)


@pytest.fixture
def make_conn(fake_engine: FakeEngine):
    schema = schema_from_config(fake_engine.config.tables)
    executor = Executor(fake_engine, ShadowCatalog(schema))
    router = Router(schema)

    def build(auth: str = "trust", **settings):
        s = load_settings({"auth": auth, **settings})
        authenticator = Authenticator(lambda u: fake_engine.config.analysts[u].password
                                      if u in fake_engine.config.analysts else None) if auth == "scram" else None
        conn = Connection(router=router, executor=executor, settings=s, authenticator=authenticator,
                          analysts=fake_engine.config.analysts, process_id=7, secret_key=99)
        return Driver(conn)

    return build


@pytest.fixture
def ready(make_conn):
    d = make_conn()
    replies = d.feed(startup())
    assert kinds(replies).endswith("KZ")
    return d


def test_startup_sends_auth_ok_parameters_key_and_ready(make_conn):
    d = make_conn()
    replies = d.feed(startup(application_name="t", DateStyle="ISO"))
    assert replies[0] == (b"R", struct.pack("!i", 0))
    params = dict(tuple(body.rstrip(b"\0").decode().split("\0")) for k, body in replies if k == b"S")
    for name in ("server_version", "server_encoding", "client_encoding", "DateStyle", "integer_datetimes",
                 "standard_conforming_strings", "TimeZone", "application_name"):
        assert name in params
    assert params["application_name"] == "t"
    assert (b"K", struct.pack("!ii", 7, 99)) in replies
    assert replies[-1] == (b"Z", b"I")


def test_ssl_and_gssenc_requests_are_declined_without_tls(make_conn):
    d = make_conn()
    assert d.feed(struct.pack("!ii", 8, m.SSL_REQUEST_CODE)) == [(b"N", b"")]
    assert d.feed(struct.pack("!ii", 8, m.GSSENC_REQUEST_CODE)) == [(b"N", b"")]
    assert kinds(d.feed(startup())).endswith("Z")


def test_newer_minor_version_gets_negotiate_protocol_version(make_conn):
    d = make_conn()
    body = struct.pack("!i", (3 << 16) | 2) + b"user\0alice\0_pq_.x\0y\0\0"
    replies = d.feed(struct.pack("!i", len(body) + 4) + body)
    assert replies[0][0] == b"v"
    assert struct.unpack_from("!ii", replies[0][1]) == (0, 1)


def test_cancel_request_is_handed_to_the_transport(make_conn):
    d = make_conn()
    d.feed(struct.pack("!iiii", 16, m.CANCEL_REQUEST_CODE, 7, 99))
    assert d.done and d.cancels[0].process_id == 7


def test_simple_query_dp_answer_has_notice_and_command_complete(ready):
    replies = ready.feed(query("SELECT COUNT(*) FROM people"))
    assert kinds(replies) == "NTDCZ"
    assert b"spent epsilon=0.1" in replies[0][1]
    assert replies[3][1] == b"SELECT 1\0"


def test_refusal_is_an_error_with_sqlstate_and_position_and_connection_stays_usable(ready):
    replies = ready.feed(query("SELECT pid FROM people"))
    assert kinds(replies) == "EZ"
    fields = error_fields_of(replies[0][1])
    assert fields["C"] == "42501" and fields["S"] == "ERROR" and fields["P"] == "8"
    assert kinds(ready.feed(query("SELECT 1"))) == "TDCZ"


def test_multi_statement_query_stops_at_first_error_with_positions_in_whole_string(ready):
    replies = ready.feed(query("SELECT 1; SELECT pid FROM people; SELECT 2"))
    assert kinds(replies) == "TDCEZ"
    assert error_fields_of(replies[3][1])["P"] == str(len("SELECT 1; ") + 8)


def test_empty_query(ready):
    assert kinds(ready.feed(query("  "))) == "IZ"


def test_set_show_and_session_epsilon_reaches_the_engine(ready, fake_engine):
    assert kinds(ready.feed(query("SET privsql.epsilon = 0.5"))) == "CZ"
    replies = ready.feed(query("SHOW privsql.epsilon"))
    assert replies[1][1].endswith(b"0.5")
    ready.feed(query("SELECT COUNT(*) FROM people"))
    assert fake_engine.spent["alice"] == pytest.approx(0.5)
    assert error_fields_of(ready.feed(query("SET privsql.epsilon = -1"))[0][1])["C"] == "22023"


def test_set_reported_parameter_sends_parameter_status(ready):
    replies = ready.feed(query("SET application_name = 'x'"))
    assert kinds(replies) == "SCZ"


def test_failed_transaction_block_until_rollback(ready):
    assert ready.feed(query("BEGIN"))[-1] == (b"Z", b"T")
    assert ready.feed(query("SELECT pid FROM people"))[-1] == (b"Z", b"E")
    replies = ready.feed(query("SELECT 1"))
    assert error_fields_of(replies[0][1])["C"] == "25P02"
    assert ready.feed(query("ROLLBACK"))[-1] == (b"Z", b"I")


def test_extended_query_with_parameters(ready, fake_engine):
    replies = ready.feed(parse("SELECT COUNT(*) FROM people WHERE age > $1") + bind([b"30"])
                         + describe("P") + execute() + SYNC)
    assert kinds(replies) == "12TNDCZ"
    assert fake_engine.spent["alice"] == pytest.approx(0.1)


def test_describe_statement_does_not_execute_or_charge(ready, fake_engine):
    replies = ready.feed(parse("SELECT COUNT(*) FROM people WHERE age > $1", "s1") + describe("S", "s1") + SYNC)
    assert kinds(replies) == "1tTZ"
    assert struct.unpack("!hI", replies[1][1]) == (1, 20)  # the compared column's type: int8
    assert fake_engine.spent["alice"] == 0 and not fake_engine.calls


def test_error_in_batch_skips_to_sync(ready, fake_engine):
    replies = ready.feed(parse("SELECT pid FROM people") + bind() + execute()
                         + parse("SELECT COUNT(*) FROM people") + bind() + execute() + SYNC)
    assert kinds(replies) == "12EZ"
    assert not fake_engine.calls
    assert kinds(ready.feed(parse("SELECT 1") + bind() + execute() + SYNC)) == "12DCZ"


def test_binary_results(ready):
    replies = ready.feed(parse("SELECT COUNT(*), AVG(income) FROM people") + bind(result_formats=(1,))
                         + execute() + SYNC)
    row = [body for k, body in replies if k == b"D"][0]
    assert struct.unpack("!hiqid", row) == (2, 8, 1000, 8, 42.5)


def test_row_limit_and_portal_suspended(ready):
    replies = ready.feed(parse("SELECT sex, COUNT(*) FROM people GROUP BY sex") + bind(portal="p")
                         + execute("p", 1) + execute("p", 1) + SYNC)
    assert kinds(replies) == "12NDsDCZ"


def test_named_statement_reuse_and_duplicate(ready):
    ready.feed(parse("SELECT 1", "a") + SYNC)
    replies = ready.feed(parse("SELECT 2", "a") + SYNC)
    assert error_fields_of(replies[0][1])["C"] == "42P05"
    replies = ready.feed(bind(stmt="a") + execute() + msg(b"C", b"Sa\0") + SYNC)
    assert kinds(replies) == "2DC3Z"
    assert error_fields_of(ready.feed(bind(stmt="a") + SYNC)[0][1])["C"] == "26000"


def test_catalog_queries_are_answered_without_the_engine(ready, fake_engine):
    replies = ready.feed(query("SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relkind = 'r' ORDER BY 1"))
    rows = [body for k, body in replies if k == b"D"]
    assert len(rows) == 2 and b"people" in rows[0]
    replies = ready.feed(query("SELECT current_database(), current_schema(), version()"))
    assert b"PostgreSQL 15" in replies[1][1]
    assert not fake_engine.calls


def test_malformed_message_closes_only_with_fatal(ready):
    replies = ready.feed(b"Q" + struct.pack("!i", 3))
    assert kinds(replies) == "E"
    assert error_fields_of(replies[0][1])["S"] == "FATAL" and ready.done


def test_oversized_message_is_refused(make_conn):
    d = make_conn(max_message_size=1000)
    d.feed(startup())
    replies = d.feed(b"Q" + struct.pack("!i", 5000))
    assert error_fields_of(replies[0][1])["C"] == "08P01" and d.done


def _scram(d: Driver, password: str) -> list[tuple[bytes, bytes]]:
    replies = d.feed(startup())
    assert replies[0][0] == b"R" and b"SCRAM-SHA-256" in replies[0][1]
    client = scramp.ScramClient(["SCRAM-SHA-256"], "ignored", password)
    first = client.get_client_first().encode()
    body = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
    replies = d.feed(msg(b"p", body))
    if replies[0][0] == b"E":
        return replies
    client.set_server_first(replies[0][1][4:].decode())
    return d.feed(msg(b"p", client.get_client_final().encode()))


def test_scram_accepts_the_right_password(make_conn):
    replies = _scram(make_conn("scram"), PASSWORD)
    assert kinds(replies).startswith("RR")  # SASLFinal, AuthenticationOk
    assert replies[-1][0] == b"Z"


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", PASSWORD)])
def test_scram_wrong_password_and_unknown_user_fail_alike(make_conn, user, password):
    d = make_conn("scram")
    replies = d.feed(startup(user))
    client = scramp.ScramClient(["SCRAM-SHA-256"], "x", password)
    first = client.get_client_first().encode()
    replies = d.feed(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
    client.set_server_first(replies[0][1][4:].decode())
    replies = d.feed(msg(b"p", client.get_client_final().encode()))
    fields = error_fields_of(replies[0][1])
    assert fields["C"] == "28P01" and fields["S"] == "FATAL"
    assert fields["M"] == f'password authentication failed for user "{user}"'
    assert d.done
