"""Fixtures for the Airflow tests: Airflow from the lock, and the Meltano fixtures reused.

* ``airflow_bin`` (session): ``orchestrate/airflow/install.sh`` (a no-op when .venv-airflow was
  built from the same lock), then the ``airflow`` executable.
* ``groups_module``: the DAG's helper module (standard library only), imported from the DAG
  folder, so that the tests build a group's command and environment exactly as the DAG does.
* ``pg_checks``: tests/meltano/test_meltano_postgres.py's checks of the tables, imported.
* ``worker_environ``: this process's environment without Meltano or plugin settings.
* ``meltano_sys_dir`` (per test): a private Meltano system directory whose plugin directories
  link to the repository's installed plugins, so that runs never share ``.meltano/run``
  with other tests.

The PostgreSQL server, the Meltano runner and the environment fixtures are
``tests/meltano/conftest.py``'s own, imported below.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "orchestrate" / "airflow" / "dags"
AIRFLOW_VENV = Path(os.environ.get("AIRFLOW_VENV") or REPO_ROOT / ".venv-airflow")


def _load(name: str, path: Path) -> ModuleType:
    """Import a module from a file under a name of its own (conftest.py is not unique)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_meltano = _load("tests_meltano_conftest", REPO_ROOT / "tests" / "meltano" / "conftest.py")
# Fixtures reused from tests/meltano/conftest.py (pytest finds them by these names).
postgres_server = _meltano.postgres_server
pg_database = _meltano.pg_database
meltano = _meltano.meltano
meltano_project = _meltano.meltano_project
meltano_env = _meltano.meltano_env
target_postgres_env = _meltano.target_postgres_env
unavailable = _meltano._unavailable


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker of the tests that run Airflow."""
    config.addinivalue_line("markers", "airflow: runs Airflow (deselect with -m 'not airflow')")
    _meltano.pytest_configure(config)  # the meltano marker of the checks imported from there


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    """The airflow executable of .venv-airflow, installed from the lock if needed."""
    result = subprocess.run(
        [str(REPO_ROOT / "orchestrate" / "airflow" / "install.sh")],
        env={**os.environ, "AIRFLOW_VENV": str(AIRFLOW_VENV)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        unavailable(f"orchestrate/airflow/install.sh failed:\n{result.stdout}{result.stderr}")
    return AIRFLOW_VENV / "bin" / "airflow"


@pytest.fixture(scope="session")
def groups_module() -> ModuleType:
    """orchestrate/airflow/dags/tap_analytics_groups.py, imported."""
    return _load("tap_analytics_groups", DAGS_FOLDER / "tap_analytics_groups.py")


@pytest.fixture(scope="session")
def pg_checks() -> ModuleType:
    """tests/meltano/test_meltano_postgres.py's checks of the tables against the sandbox."""
    return _load(
        "tests_meltano_postgres", REPO_ROOT / "tests" / "meltano" / "test_meltano_postgres.py"
    )


@pytest.fixture
def worker_environ() -> dict[str, str]:
    """This process's environment without Meltano and plugin settings (a clean worker)."""
    return _meltano.clean_environ()


@pytest.fixture
def meltano_sys_dir(meltano: object, tmp_path: Path) -> Path:
    """A Meltano system directory of this test's own, with the repository's installed plugins."""
    sys_dir = tmp_path / "meltano-sys"
    sys_dir.mkdir()
    for kind in ("extractors", "loaders"):
        (sys_dir / kind).symlink_to(REPO_ROOT / ".meltano" / kind, target_is_directory=True)
    return sys_dir
