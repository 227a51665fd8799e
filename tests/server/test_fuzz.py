"""Robustness: thousands of random, truncated and hostile messages; the server stays up."""

from __future__ import annotations

import random
import socket
import struct

import psycopg
import pytest
from wire_helpers import FakeEngine, RunningServer

from privsql.server import messages as m

TYPES = b"QPBDEHSCXpFdcf" + bytes([0, 255, ord("Z")])


def _startup(user: str = "alice") -> bytes:
    body = struct.pack("!i", m.PROTOCOL_3_0) + b"user\0" + user.encode() + b"\0database\0privsql\0\0"
    return struct.pack("!i", len(body) + 4) + body


def _random_message(rng: random.Random) -> bytes:
    kind = bytes([rng.choice(TYPES)])
    body = rng.randbytes(rng.randint(0, 64))
    if rng.random() < 0.3:  # plausible structure: cstrings and counts
        body = b"\0".join(rng.choice([b"", b"SELECT 1", b"p", b"\xff\xfe", b"SELECT COUNT(*) FROM people"])
                          for _ in range(rng.randint(1, 4))) + struct.pack("!h", rng.randint(-2, 3))
    length = len(body) + 4
    if rng.random() < 0.1:
        length = rng.choice([0, 3, -1, 1 << 30, length + rng.randint(1, 9)])
    frame = kind + struct.pack("!i", length) + body
    if rng.random() < 0.1:
        frame = frame[: rng.randint(1, len(frame))]
    return frame


def _session(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.5)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass


@pytest.fixture
def trust_server(fake_engine: FakeEngine):
    srv = RunningServer(fake_engine, auth="trust")
    yield srv
    srv.stop()


def test_random_messages_never_take_the_server_down(trust_server: RunningServer, caplog) -> None:
    caplog.set_level("ERROR", logger="privsql.server")
    rng = random.Random(20240611)
    sent = 0
    for i in range(150):
        if i % 10 == 0:  # garbage before/instead of a startup packet
            payload = rng.randbytes(rng.randint(0, 40))
        else:
            payload = _startup() + b"".join(_random_message(rng) for _ in range(25))
        sent += 25
        _session(trust_server.port, payload)
    assert sent >= 3000
    with psycopg.connect(trust_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone() == (1000,)
    unexpected = [r for r in caplog.records if r.levelname == "ERROR"]
    assert not unexpected, unexpected[0].getMessage()


def test_truncated_startup_and_ssl_garbage(trust_server: RunningServer) -> None:
    for payload in (b"\0\0", struct.pack("!ii", 8, m.SSL_REQUEST_CODE) + b"garbage", struct.pack("!i", 99999999),
                    struct.pack("!ii", 8, 1234), _startup()[:-3]):
        _session(trust_server.port, payload)
    with psycopg.connect(trust_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
