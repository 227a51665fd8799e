"""PostgreSQL data types on the wire: OIDs, text and binary encoders, parameter decoders.

privsql's own column types ('bigint', 'double', ...) and the configured table
column types ('int', 'float', ...) both map onto a handful of PostgreSQL types.
Values go out in text format unless the client asks for binary; parameters come
in either format and are decoded into plain Python values for the engine.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from privsql.errors import InvalidParameter


@dataclass(frozen=True)
class PgType:
    """One PostgreSQL type as clients see it in RowDescription and pg_type."""

    name: str
    oid: int
    size: int  # typlen: fixed byte size, or -1 for variable length
    array_oid: int = 0
    category: str = "U"  # typcategory


BOOL = PgType("bool", 16, 1, 1000, "B")
BYTEA = PgType("bytea", 17, -1, 1001, "U")
CHAR = PgType("char", 18, 1, 1002, "S")
NAME = PgType("name", 19, 64, 1003, "S")
INT8 = PgType("int8", 20, 8, 1016, "N")
INT2 = PgType("int2", 21, 2, 1005, "N")
INT4 = PgType("int4", 23, 4, 1007, "N")
REGPROC = PgType("regproc", 24, 4, 1008, "N")
TEXT = PgType("text", 25, -1, 1009, "S")
OID = PgType("oid", 26, 4, 1028, "N")
FLOAT4 = PgType("float4", 700, 4, 1021, "N")
FLOAT8 = PgType("float8", 701, 8, 1022, "N")
UNKNOWN = PgType("unknown", 705, -2, 0, "X")
VARCHAR = PgType("varchar", 1043, -1, 1015, "S")
DATE = PgType("date", 1082, 4, 1182, "D")
TIMESTAMP = PgType("timestamp", 1114, 8, 1115, "D")
TIMESTAMPTZ = PgType("timestamptz", 1184, 8, 1185, "D")
NUMERIC = PgType("numeric", 1700, -1, 1231, "N")
REGCLASS = PgType("regclass", 2205, 4, 2210, "N")
REGTYPE = PgType("regtype", 2206, 4, 2211, "N")

#: the base types privsql ever reports, by name (used for pg_type too)
BUILTIN: tuple[PgType, ...] = (
    BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, REGPROC, TEXT, OID, FLOAT4, FLOAT8,
    UNKNOWN, VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC, REGCLASS, REGTYPE,
)
BY_OID: dict[int, PgType] = {t.oid: t for t in BUILTIN}
BY_NAME: dict[str, PgType] = {t.name: t for t in BUILTIN}

#: privsql result column types (privsql.results.COLUMN_TYPES) → wire types
RESULT_TYPES: dict[str, PgType] = {
    "bigint": INT8,
    "double": FLOAT8,
    "numeric": NUMERIC,
    "text": TEXT,
    "boolean": BOOL,
    "date": DATE,
    "timestamp": TIMESTAMP,
}

#: configured table column types (privsql.config ColumnMeta.type) → wire types
CONFIG_TYPES: dict[str, PgType] = {
    "int": INT8,
    "float": FLOAT8,
    "text": TEXT,
    "bool": BOOL,
    "date": DATE,
    "timestamp": TIMESTAMP,
}

#: DuckDB type names (as str(cursor.description[i][1])) → wire types
DUCKDB_TYPES: dict[str, PgType] = {
    "BOOLEAN": BOOL,
    "TINYINT": INT2,
    "SMALLINT": INT2,
    "INTEGER": INT4,
    "BIGINT": INT8,
    "HUGEINT": NUMERIC,
    "UTINYINT": INT2,
    "USMALLINT": INT4,
    "UINTEGER": INT8,
    "UBIGINT": NUMERIC,
    "FLOAT": FLOAT4,
    "DOUBLE": FLOAT8,
    "VARCHAR": TEXT,
    "BLOB": BYTEA,
    "DATE": DATE,
    "TIMESTAMP": TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ,
    "\"NULL\"": TEXT,
    "NULL": TEXT,
}

_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def duckdb_type(type_name: str) -> PgType:
    """The wire type for a DuckDB result column type name (lists become text)."""
    if type_name.startswith("DECIMAL"):
        return NUMERIC
    return DUCKDB_TYPES.get(type_name, TEXT)


# ---------------------------------------------------------------- text output


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _list_text(value: list | tuple) -> str:
    def item(v: Any) -> str:
        if v is None:
            return "NULL"
        s = text_value(v)
        if s == "" or any(c in s for c in ' ,{}"\\') or s.upper() == "NULL":
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return s

    return "{" + ",".join(item(v) for v in value) + "}"


def text_value(value: Any) -> str:
    """PostgreSQL's text output for a Python value (DateStyle ISO)."""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (list, tuple)):
        return _list_text(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, Decimal):
        return "NaN" if value.is_nan() else format(value, "f")
    return str(value)


def encode_text(value: Any) -> bytes | None:
    """Text-format wire bytes for one value (None is SQL NULL)."""
    if value is None:
        return None
    return text_value(value).encode()


# -------------------------------------------------------------- binary output


def _numeric_binary(value: Decimal) -> bytes:
    if value.is_nan():
        return struct.pack("!hhHH", 0, 0, 0xC000, 0)
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    dscale = max(0, -exponent)
    # split the integer digit string into base-10000 groups aligned on the point
    digit_str = "".join(map(str, digits))
    int_len = len(digit_str) + exponent  # digits before the decimal point
    pad_left = (-int_len) % 4
    digit_str = "0" * pad_left + digit_str
    int_len += pad_left
    pad_right = (-len(digit_str)) % 4
    digit_str += "0" * pad_right
    groups = [int(digit_str[i:i + 4]) for i in range(0, len(digit_str), 4)]
    weight = int_len // 4 - 1
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = struct.pack("!hhHH", len(groups), weight, 0x4000 if sign else 0, dscale)
    return head + struct.pack(f"!{len(groups)}H", *groups)


def _int_packer(fmt: str) -> Callable[[Any], bytes]:
    return lambda v: struct.pack(fmt, int(v))


def _timestamp_binary(value: dt.datetime) -> bytes:
    epoch = _PG_EPOCH_TZ if value.tzinfo is not None else _PG_EPOCH
    delta = value - epoch
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return struct.pack("!q", micros)


_BINARY_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    BOOL.oid: lambda v: b"\x01" if v else b"\x00",
    INT2.oid: _int_packer("!h"),
    INT4.oid: _int_packer("!i"),
    INT8.oid: _int_packer("!q"),
    OID.oid: _int_packer("!I"),
    REGPROC.oid: _int_packer("!I"),
    FLOAT4.oid: lambda v: struct.pack("!f", float(v)),
    FLOAT8.oid: lambda v: struct.pack("!d", float(v)),
    NUMERIC.oid: lambda v: _numeric_binary(v if isinstance(v, Decimal) else Decimal(str(v))),
    DATE.oid: lambda v: struct.pack("!i", (v - _PG_EPOCH_DATE).days),
    TIMESTAMP.oid: _timestamp_binary,
    TIMESTAMPTZ.oid: _timestamp_binary,
    BYTEA.oid: bytes,
}


def encode_binary(value: Any, oid: int) -> bytes | None:
    """Binary-format wire bytes for one value of type ``oid``.

    Types without a binary encoder here (text, name, varchar, char) are sent as
    their UTF-8 text, which is their binary format too.
    """
    if value is None:
        return None
    encoder = _BINARY_ENCODERS.get(oid)
    if encoder is None:
        return text_value(value).encode()
    return encoder(value)


def has_binary(oid: int) -> bool:
    """True when values of type ``oid`` can be sent in binary format."""
    return oid in _BINARY_ENCODERS or oid in (TEXT.oid, VARCHAR.oid, NAME.oid, CHAR.oid, UNKNOWN.oid)


# ---------------------------------------------------------- parameter decoding


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("t", "true", "y", "yes", "on", "1"):
        return True
    if low in ("f", "false", "n", "no", "off", "0"):
        return False
    raise ValueError(text)


def _numeric_from_binary(data: bytes) -> Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", data)
    if sign == 0xC000:
        return Decimal("NaN")
    groups = struct.unpack_from(f"!{ndigits}H", data, 8)
    value = Decimal(0)
    for i, g in enumerate(groups):
        value += Decimal(g).scaleb(4 * (weight - i))
    value = value.quantize(Decimal(1).scaleb(-dscale)) if dscale else value.to_integral_value()
    return -value if sign == 0x4000 else value


def _datetime_from_binary(data: bytes, epoch: dt.datetime) -> dt.datetime:
    (micros,) = struct.unpack("!q", data)
    return epoch + dt.timedelta(microseconds=micros)


_TEXT_DECODERS: dict[int, Callable[[str], Any]] = {
    BOOL.oid: _parse_bool,
    INT2.oid: int,
    INT4.oid: int,
    INT8.oid: int,
    OID.oid: int,
    FLOAT4.oid: float,
    FLOAT8.oid: float,
    NUMERIC.oid: Decimal,
    DATE.oid: dt.date.fromisoformat,
    TIMESTAMP.oid: dt.datetime.fromisoformat,
    TIMESTAMPTZ.oid: dt.datetime.fromisoformat,
}

_BINARY_DECODERS: dict[int, Callable[[bytes], Any]] = {
    BOOL.oid: lambda b: struct.unpack("!?", b)[0],
    INT2.oid: lambda b: struct.unpack("!h", b)[0],
    INT4.oid: lambda b: struct.unpack("!i", b)[0],
    INT8.oid: lambda b: struct.unpack("!q", b)[0],
    OID.oid: lambda b: struct.unpack("!I", b)[0],
    FLOAT4.oid: lambda b: struct.unpack("!f", b)[0],
    FLOAT8.oid: lambda b: struct.unpack("!d", b)[0],
    NUMERIC.oid: _numeric_from_binary,
    DATE.oid: lambda b: _PG_EPOCH_DATE + dt.timedelta(days=struct.unpack("!i", b)[0]),
    TIMESTAMP.oid: lambda b: _datetime_from_binary(b, _PG_EPOCH),
    TIMESTAMPTZ.oid: lambda b: _datetime_from_binary(b, _PG_EPOCH_TZ),
    BYTEA.oid: bytes,
}


def decode_param(data: bytes | None, oid: int, binary: bool) -> Any:
    """Decode one Bind parameter of type ``oid`` (0 or unknown: text)."""
    if data is None:
        return None
    try:
        if binary:
            decoder = _BINARY_DECODERS.get(oid)
            return decoder(data) if decoder else data.decode()
        text = data.decode()
        text_decoder = _TEXT_DECODERS.get(oid)
        return text_decoder(text.strip()) if text_decoder else text
    except (ValueError, struct.error, UnicodeDecodeError, ArithmeticError) as exc:
        kind = BY_OID[oid].name if oid in BY_OID else "text"
        raise InvalidParameter(f"invalid {'binary' if binary else 'text'} value for a parameter of type {kind}") from exc


_PLACEHOLDERS: dict[int, Any] = {
    BOOL.oid: False, INT2.oid: 0, INT4.oid: 0, INT8.oid: 0, OID.oid: 0, FLOAT4.oid: 0.0, FLOAT8.oid: 0.0,
    NUMERIC.oid: Decimal(0), DATE.oid: _PG_EPOCH_DATE, TIMESTAMP.oid: _PG_EPOCH, TIMESTAMPTZ.oid: _PG_EPOCH_TZ,
}


def placeholder_values(oids: tuple[int, ...]) -> list[Any]:
    """Stand-in parameter values of the right types, for describing a statement before Bind."""
    return [_PLACEHOLDERS.get(oid, "") for oid in oids]
