"""SCRAM-SHA-256 authentication (RFC 5802/7677) with PostgreSQL-format verifiers.

A verifier is ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``
(base64 fields), the same string PostgreSQL keeps in ``pg_authid``; the
password itself is never stored. An unknown user gets a verifier derived from
a per-process secret, so the exchange runs the same steps and costs the same
time as for a known user with a wrong password, and ends with the same error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Callable

from scramp import ScramMechanism

MECHANISM = "SCRAM-SHA-256"
ITERATIONS = 4096
AUTH_FAILED_SQLSTATE = "28P01"

_mechanism = ScramMechanism(MECHANISM)


@dataclass(frozen=True)
class Verifier:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def auth_info(self) -> tuple[bytes, bytes, bytes, int]:
        return self.salt, self.stored_key, self.server_key, self.iterations


def make_verifier(password: str, *, iterations: int = ITERATIONS) -> str:
    """A PostgreSQL-format SCRAM-SHA-256 verifier string for ``password``."""
    salt, stored_key, server_key, iters = _mechanism.make_auth_info(password, iteration_count=iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"{MECHANISM}${iters}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def parse_verifier(text: str) -> Verifier:
    """Parse a verifier string; ValueError when it is not one."""
    try:
        mech, iter_salt, keys = text.split("$")
        iters, salt = iter_salt.split(":")
        stored, server = keys.split(":")
        if mech != MECHANISM:
            raise ValueError(mech)
        return Verifier(base64.b64decode(salt, validate=True), base64.b64decode(stored, validate=True),
                        base64.b64decode(server, validate=True), int(iters))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a SCRAM-SHA-256 verifier (use `privsql passwd`)") from exc


class AuthFailed(Exception):
    """Password authentication failed; the message never says why."""

    def __init__(self, user: str) -> None:
        super().__init__(f'password authentication failed for user "{user}"')


def _attributes(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or part[0] in out:
            raise ValueError("malformed SCRAM attribute")
        out[part[0]] = part[2:]
    return out


class ScramExchange:
    """One server-side SCRAM-SHA-256 exchange (RFC 5802 §3), fed the client's messages in order.

    Written out rather than delegated to ``scramp``'s server, which rejects the
    empty SCRAM user name libpq sends (PostgreSQL takes the user from the
    startup packet instead). Channel binding is not offered.
    """

    def __init__(self, user: str, verifier: Verifier, known: bool) -> None:
        self.user = user
        self._verifier = verifier
        self._known = known
        self._nonce = ""
        self._gs2 = ""
        self._auth_prefix = ""

    def server_first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode()
            flag, authzid, bare = text.split(",", 2)
            if flag not in ("n", "y") or authzid:
                raise ValueError("channel binding and authzid are not supported")
            attrs = _attributes(bare)
            client_nonce = attrs["r"]
            if not client_nonce or "m" in attrs:
                raise ValueError("bad client nonce")
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise AuthFailed(self.user) from exc
        self._gs2 = f"{flag},{authzid},"
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self._verifier.salt).decode()
        server_first = f"r={self._nonce},s={salt},i={self._verifier.iterations}"
        self._auth_prefix = f"{bare},{server_first},"
        return server_first.encode()

    def server_final(self, client_final: bytes) -> bytes:
        try:
            text = client_final.decode()
            without_proof, _, proof_b64 = text.rpartition(",p=")
            attrs = _attributes(without_proof)
            proof = base64.b64decode(proof_b64, validate=True)
            if attrs.get("r") != self._nonce or base64.b64decode(attrs.get("c", "")) != self._gs2.encode():
                raise ValueError("nonce or channel binding mismatch")
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise AuthFailed(self.user) from exc
        auth_message = (self._auth_prefix + without_proof).encode()
        v = self._verifier
        signature = hmac.new(v.stored_key, auth_message, hashlib.sha256).digest()
        client_key = bytes(a ^ b for a, b in zip(signature, proof.ljust(len(signature), b"\0")))
        matches = hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key) and len(proof) == len(signature)
        if not (matches and self._known):
            raise AuthFailed(self.user)
        server_signature = hmac.new(v.server_key, auth_message, hashlib.sha256).digest()
        return b"v=" + base64.b64encode(server_signature)


class Authenticator:
    """Looks up analysts' verifiers and starts exchanges; unknown users get a decoy."""

    def __init__(self, lookup: Callable[[str], str | None]) -> None:
        self._lookup = lookup
        self._decoy_secret = secrets.token_bytes(32)

    def _decoy(self, user: str) -> Verifier:
        digest = hmac.new(self._decoy_secret, user.encode(), hashlib.sha256).digest()
        return Verifier(digest[:16], hashlib.sha256(digest).digest(), hashlib.sha256(digest[::-1]).digest(), ITERATIONS)

    def start(self, user: str) -> ScramExchange:
        text = self._lookup(user)
        verifier: Verifier | None = None
        if text:
            try:
                verifier = parse_verifier(text)
            except ValueError:
                verifier = None
        if verifier is None:
            return ScramExchange(user, self._decoy(user), known=False)
        return ScramExchange(user, verifier, known=True)
