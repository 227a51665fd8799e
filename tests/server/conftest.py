"""Fixtures for the wire-server tests; the helpers they use live in ``wire_helpers``.

Test modules import helpers from ``wire_helpers``, never ``from conftest``:
tests/conftest.py and this file share the module name ``conftest``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Iterator

import pytest
from wire_helpers import FakeEngine, RunningServer, _real_engine, make_verifier, PASSWORD

@pytest.fixture(scope="session")
def verifier() -> str:
    return make_verifier(PASSWORD)


@pytest.fixture
def fake_engine(verifier: str) -> FakeEngine:
    return FakeEngine(verifier)


@pytest.fixture
def server(fake_engine: FakeEngine) -> Iterator[RunningServer]:
    srv = RunningServer(fake_engine)
    yield srv
    srv.stop()


@pytest.fixture
def engine_server(tmp_path: Path, verifier: str) -> Iterator[RunningServer]:
    """A server on the real engine when it exists, else on the fake (for client conformance)."""
    engine = _real_engine(tmp_path, verifier) or FakeEngine(verifier)
    srv = RunningServer(engine)
    yield srv
    srv.stop()
    engine.close()


def _share_parent_helpers() -> None:
    """Re-export tests/conftest.py's plain helpers under this module.

    Both files are imported as ``conftest``; whichever loads last is what
    ``from conftest import X`` in tests/*.py sees, so this one offers the
    parent's names too (fixtures excluded: pytest registers those itself).
    """
    parent = Path(__file__).resolve().parents[1] / "conftest.py"
    if not parent.exists():
        return
    spec = importlib.util.spec_from_file_location("_privsql_tests_conftest", parent)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace = globals()
    for name, value in vars(module).items():
        if name.startswith("__") or name in namespace or type(value).__name__ == "FixtureFunctionDefinition" \
                or hasattr(value, "_pytestfixturefunction"):
            continue
        namespace[name] = value


_share_parent_helpers()
