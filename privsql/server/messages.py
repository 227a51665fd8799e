"""PostgreSQL v3 protocol messages: frontend decoders and backend encoders.

Pure functions over bytes. Frontend messages decode into small frozen
dataclasses; a malformed body raises :class:`ProtocolViolation` (SQLSTATE
08P01), which closes only the offending connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class ProtocolViolation(Exception):
    """The client sent bytes that are not a valid message here (08P01)."""

    sqlstate = "08P01"


# ------------------------------------------------------------------ decoding


class BodyReader:
    """Bounds-checked reads from one message body."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.body):
            raise ProtocolViolation("message body is shorter than its fields")
        chunk = self.body[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return struct.unpack("!h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack("!i", self._take(4))[0]

    def uint32(self) -> int:
        return struct.unpack("!I", self._take(4))[0]

    def byte(self) -> bytes:
        return self._take(1)

    def cstring(self) -> str:
        end = self.body.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation("unterminated string in message")
        raw = self.body[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolViolation("invalid UTF-8 in message") from exc

    def count(self) -> int:
        n = self.int16()
        if n < 0:
            raise ProtocolViolation("negative count in message")
        return n

    def bytes_or_null(self) -> bytes | None:
        n = self.int32()
        if n == -1:
            return None
        return self._take(n)

    def rest(self) -> bytes:
        return self._take(len(self.body) - self.pos)

    def end(self) -> None:
        if self.pos != len(self.body):
            raise ProtocolViolation("trailing bytes after message fields")


@dataclass(frozen=True)
class Startup:
    version: int
    params: dict[str, str]


@dataclass(frozen=True)
class SSLRequest:
    pass


@dataclass(frozen=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True)
class CancelRequest:
    process_id: int
    secret_key: int


def decode_startup(body: bytes) -> Startup | SSLRequest | GSSENCRequest | CancelRequest:
    """Decode the first, untyped message of a connection (length already removed)."""
    r = BodyReader(body)
    code = r.int32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid, key = r.int32(), r.int32()
        r.end()
        return CancelRequest(pid, key)
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if not name:
            break
        params[name] = r.cstring()
    r.end()
    return Startup(code, params)


@dataclass(frozen=True)
class Query:
    sql: str


@dataclass(frozen=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...]


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True)
class Describe:
    kind: str  # 'S' statement or 'P' portal
    name: str


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int  # 0 = all


@dataclass(frozen=True)
class Close:
    kind: str
    name: str


@dataclass(frozen=True)
class Sync:
    pass


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Terminate:
    pass


@dataclass(frozen=True)
class AuthData:
    """'p': a password, SASLInitialResponse or SASLResponse; decoded in context."""

    data: bytes


@dataclass(frozen=True)
class Unsupported:
    """A valid message privsql does not serve (FunctionCall, COPY data)."""

    type: bytes


FrontendMessage = Query | Parse | Bind | Describe | Execute | Close | Sync | Flush | Terminate | AuthData | Unsupported


def _parse(r: BodyReader) -> Parse:
    name, sql = r.cstring(), r.cstring()
    types = tuple(r.uint32() for _ in range(r.count()))
    return Parse(name, sql, types)


def _bind(r: BodyReader) -> Bind:
    portal, statement = r.cstring(), r.cstring()
    formats = tuple(r.int16() for _ in range(r.count()))
    params = tuple(r.bytes_or_null() for _ in range(r.count()))
    results = tuple(r.int16() for _ in range(r.count()))
    if any(f not in (0, 1) for f in formats + results):
        raise ProtocolViolation("format codes must be 0 (text) or 1 (binary)")
    return Bind(portal, statement, formats, params, results)


def _kind_name(r: BodyReader) -> tuple[str, str]:
    kind = r.byte()
    if kind not in (b"S", b"P"):
        raise ProtocolViolation(f"invalid Describe/Close kind {kind!r}")
    return kind.decode(), r.cstring()


def decode_frontend(msg_type: bytes, body: bytes) -> FrontendMessage:
    """Decode one typed frontend message."""
    r = BodyReader(body)
    msg: FrontendMessage
    if msg_type == b"Q":
        msg = Query(r.cstring())
    elif msg_type == b"P":
        msg = _parse(r)
    elif msg_type == b"B":
        msg = _bind(r)
    elif msg_type == b"D":
        msg = Describe(*_kind_name(r))
    elif msg_type == b"E":
        msg = Execute(r.cstring(), r.int32())
    elif msg_type == b"C":
        msg = Close(*_kind_name(r))
    elif msg_type == b"S":
        msg = Sync()
    elif msg_type == b"H":
        msg = Flush()
    elif msg_type == b"X":
        msg = Terminate()
    elif msg_type == b"p":
        msg = AuthData(r.rest())
    elif msg_type in (b"F", b"d", b"c", b"f"):
        return Unsupported(msg_type)
    else:
        raise ProtocolViolation(f"invalid frontend message type {msg_type!r}")
    r.end()
    return msg


def decode_sasl_initial(data: bytes) -> tuple[str, bytes]:
    """SASLInitialResponse: (mechanism, client-first-message)."""
    r = BodyReader(data)
    mechanism = r.cstring()
    payload = r.bytes_or_null() or b""
    r.end()
    return mechanism, payload


# ------------------------------------------------------------------ encoding


def message(msg_type: bytes, body: bytes = b"") -> bytes:
    return msg_type + struct.pack("!I", len(body) + 4) + body


def _cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def authentication_ok() -> bytes:
    return message(b"R", struct.pack("!I", 0))


def authentication_sasl(mechanisms: Iterable[str]) -> bytes:
    return message(b"R", struct.pack("!I", 10) + b"".join(_cstr(m) for m in mechanisms) + b"\x00")


def authentication_sasl_continue(data: bytes) -> bytes:
    return message(b"R", struct.pack("!I", 11) + data)


def authentication_sasl_final(data: bytes) -> bytes:
    return message(b"R", struct.pack("!I", 12) + data)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", _cstr(name) + _cstr(value))


def backend_key_data(process_id: int, secret_key: int) -> bytes:
    return message(b"K", struct.pack("!ii", process_id, secret_key))


def negotiate_protocol_version(minor: int, unrecognized: Sequence[str]) -> bytes:
    body = struct.pack("!ii", minor, len(unrecognized)) + b"".join(_cstr(o) for o in unrecognized)
    return message(b"v", body)


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


@dataclass(frozen=True)
class FieldDescription:
    """One RowDescription field."""

    name: str
    type_oid: int
    type_size: int
    format: int = 0  # 0 text, 1 binary
    type_modifier: int = -1
    table_oid: int = 0
    column_number: int = 0


def row_description(fields: Sequence[FieldDescription]) -> bytes:
    parts = [struct.pack("!h", len(fields))]
    for f in fields:
        parts.append(_cstr(f.name))
        parts.append(struct.pack("!IhIhih", f.table_oid, f.column_number, f.type_oid, f.type_size, f.type_modifier, f.format))
    return message(b"T", b"".join(parts))


def data_row(values: Sequence[bytes | None]) -> bytes:
    parts = [struct.pack("!h", len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(struct.pack("!i", len(v)))
            parts.append(v)
    return message(b"D", b"".join(parts))


def command_complete(tag: str) -> bytes:
    return message(b"C", _cstr(tag))


def empty_query_response() -> bytes:
    return message(b"I")


def parse_complete() -> bytes:
    return message(b"1")


def bind_complete() -> bytes:
    return message(b"2")


def close_complete() -> bytes:
    return message(b"3")


def no_data() -> bytes:
    return message(b"n")


def portal_suspended() -> bytes:
    return message(b"s")


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", struct.pack(f"!h{len(oids)}I", len(oids), *oids))


def _fields(fields: dict[str, str]) -> bytes:
    return b"".join(code.encode() + _cstr(value) for code, value in fields.items()) + b"\x00"


def error_response(fields: dict[str, str]) -> bytes:
    """ErrorResponse from single-letter field codes (S, V, C, M, D, H, P, ...)."""
    return message(b"E", _fields(fields))


def notice_response(fields: dict[str, str]) -> bytes:
    return message(b"N", _fields(fields))
