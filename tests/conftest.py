"""Shared fixtures.

- ``atm_table`` / ``atm_table_file``: the analytic atmosphere table of ``calpipe.testing``
  (in memory and as an ``.npz`` written by ``save_table``), so that no test depends on the
  shipped table.
- ``small_session``: one small simulated session (``calpipe.testing.make_session`` with
  ``SMALL_SESSION``, also given as the fixture ``small_session_kwargs``), written once per
  test run. Treat it as read-only. Scans: 1000 (load), 1001 (TP, own calibration/),
  1002 (OTF), 1003 (load), 1004 (TP), 1005 (OTF); science scans without their own loads point
  at the previous load scan through ``lloadsn``.
- ``broken_session``: a private copy of ``tiny_session`` (the same options, 4 scans: 1000
  load, 1001 TP with own calibration/, 1002 OTF, 1003 TP) for a test to break; removed after
  the test. Copies are kept small on purpose: every file costs time to create and delete.
- ``scratch``: like ``tmp_path`` but removed after the test, for tests that write stores.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calpipe.testing import analytic_table, copy_session, make_session

SMALL_SESSION: dict[str, Any] = {
    "fill_fraction": 0.1,
    "dead_channels": 2,
    "own_calibration": (0,),
    "freq_off_hz": 2.5e6,
}


@pytest.fixture(scope="session")
def small_session_kwargs() -> dict[str, Any]:
    """The ``make_session`` options of ``small_session`` (a copy)."""
    return dict(SMALL_SESSION)


@pytest.fixture(scope="session")
def atm_table() -> Any:
    return analytic_table()


@pytest.fixture(scope="session")
def atm_table_file(tmp_path_factory: pytest.TempPathFactory, atm_table: Any) -> Path:
    from calpipe.atmosphere.tableio import save_table

    path = tmp_path_factory.mktemp("atm") / "analytic.npz"
    save_table(atm_table, path)
    return path


@pytest.fixture(scope="session")
def small_session(tmp_path_factory: pytest.TempPathFactory, atm_table: Any) -> Path:
    return make_session(tmp_path_factory.mktemp("l0") / "session.zarr", table=atm_table,
                        **SMALL_SESSION)


@pytest.fixture(scope="session")
def tiny_session(tmp_path_factory: pytest.TempPathFactory, atm_table: Any) -> Path:
    return make_session(tmp_path_factory.mktemp("l0") / "tiny.zarr", table=atm_table,
                        n_scans=4, load_every=4, **SMALL_SESSION)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, deleted after the test (zarr stores are many small files)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def broken_session(tiny_session: Path, scratch: Path) -> Path:
    """A private copy of ``tiny_session`` to break (deleted after the test)."""
    return copy_session(tiny_session, scratch / "session.zarr")
