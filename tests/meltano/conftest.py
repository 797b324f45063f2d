"""Fixtures for the Meltano tests.

* ``postgres_server`` (session): a throwaway PostgreSQL server on 127.0.0.1, on a
  free port, with its data in a temporary directory; stopped and removed at the end
  of the session. When the tests run as root, PostgreSQL (which refuses to run as
  root) runs as the ``postgres`` user through ``runuser``.
* ``pg_database`` (per test): a fresh, empty database on that server.
* ``meltano`` (session): runs the ``meltano`` executable (its own virtualenv,
  ``.venv-meltano``, or ``$MELTANO_BIN``) in the repository's Meltano project, after
  making sure ``meltano install`` has been run once.
* ``meltano_project`` (per test): the same, in a copy of the project in a temporary
  directory that shares the installed plugins but not the repository's ``.env``.
* ``meltano_env`` (per test): environment variables for one isolated run: a
  private system database (so state never leaks between tests), and a private
  DuckDB file.
* ``run_into_postgres`` (per test): ``meltano run tap-analytics target-postgres``
  against a sandbox, into the test's database, with the test's Meltano state.

Sandboxes come from ``start_sandbox`` in ``tests/conftest.py``.

Under CI (``CI`` set), a missing PostgreSQL or Meltano fails the tests instead of
skipping them, so a broken install can never pass as "skipped".
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tap_analytics.sandbox import API_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))

#: Environment variables that would leak a developer's own configuration into a run.
_LEAKY_PREFIXES = ("MELTANO_", "TAP_ANALYTICS_", "TARGET_POSTGRES_", "TARGET_DUCKDB_LOCAL_")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker of the tests that run Meltano end to end."""
    config.addinivalue_line(
        "markers", "meltano: runs the meltano CLI end to end (deselect with -m 'not meltano')"
    )


def _unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where everything must be installed."""
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- PostgreSQL


def find_pg_bindir() -> Path | None:
    """Return the directory with ``initdb``/``pg_ctl``, newest PostgreSQL first."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        reverse=True,
    )
    candidates += [shutil.which("initdb") or "", "/usr/local/pgsql/bin/initdb"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).parent
    return None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class PostgresParams:
    """How to reach a database on the throwaway server."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def conninfo(self) -> str:
        """A libpq connection string."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={self.dbname}"
        )

    def connect(self, **kwargs: Any) -> Any:
        """Open a psycopg connection (autocommit)."""
        psycopg = pytest.importorskip("psycopg")
        return psycopg.connect(self.conninfo, autocommit=True, **kwargs)


class PostgresServer:
    """A PostgreSQL server in a temporary directory; ``start()`` then ``stop()``."""

    superuser = "postgres"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = secrets.token_hex(12)
        # Not under pytest's basetemp: that is 0700 root, which the postgres user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="tap-analytics-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            account = self._service_account()
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._run_as = ["runuser", "-u", account.pw_name, "--"]
            self._account = account

    @staticmethod
    def _service_account() -> pwd.struct_passwd:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        msg = "running as root and there is neither a 'postgres' nor a 'nobody' user"
        raise RuntimeError(msg)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._run_as, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"},
        )

    def start(self) -> None:
        """Run initdb, then start the server on a free port (retrying a taken port)."""
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            os.chown(pwfile, self._account.pw_uid, self._account.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            self.superuser,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        pwfile.unlink()
        last_error = ""
        for _attempt in range(5):
            self.port = free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.root} -F "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=50 -c timezone=UTC"
            )
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "--pgdata",
                    str(self.data),
                    "--log",
                    str(self.log),
                    "--wait",
                    "--timeout",
                    "60",
                    "--options",
                    options,
                    "start",
                )
                return
            except subprocess.CalledProcessError as exc:  # most likely the port was taken
                last_error = exc.stdout + exc.stderr + self._log_tail()
        msg = f"PostgreSQL did not start:\n{last_error}"
        raise RuntimeError(msg)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "--pgdata",
                    str(self.data),
                    "--mode",
                    "fast",
                    "--wait",
                    "stop",
                    timeout=60,
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def params(self, dbname: str = "postgres") -> PostgresParams:
        """Connection parameters for a database on this server."""
        return PostgresParams("127.0.0.1", self.port, self.superuser, self.password, dbname)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole test session."""
    bindir = find_pg_bindir()
    if bindir is None:
        _unavailable(
            "PostgreSQL server binaries not found (apt-get install -y postgresql, or set PG_BINDIR)"
        )
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[PostgresParams]:
    """A new, empty database for one test; dropped afterwards."""
    admin = postgres_server.params()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.params(name)
    with admin.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- Meltano


def find_meltano() -> Path | None:
    """The meltano executable: $MELTANO_BIN, .venv-meltano, or on PATH."""
    candidates = [
        os.environ.get("MELTANO_BIN", ""),
        str(REPO_ROOT / ".venv-meltano" / "bin" / "meltano"),
        shutil.which("meltano") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def clean_environ() -> dict[str, str]:
    """This process's environment without Meltano and plugin settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}


@dataclasses.dataclass
class Meltano:
    """Runs ``meltano`` in a project directory."""

    executable: Path
    project: Path

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 600,
        check: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``meltano ARGS``; on failure, fail the test with the output's tail."""
        full_env = {**clean_environ(), "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"}
        full_env.update(env or {})
        started = time.monotonic()
        result = subprocess.run(
            [str(self.executable), *args],
            cwd=cwd or self.project,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        elapsed = time.monotonic() - started
        print(f"meltano {' '.join(args)}: exit {result.returncode} in {elapsed:.1f}s")
        if check and result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
            pytest.fail(f"meltano {' '.join(args)} exited {result.returncode}:\n{tail}")
        return result

    def run_watching(
        self,
        *args: str,
        on_line: Callable[[str], bool],
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``meltano ARGS``, calling `on_line` on each output line as it comes.

        For acting at a point of a run (switching the sandbox's faults, say) without sleeps.
        When `on_line` returns True, the run is killed with SIGKILL: meltano, the tap and the
        target at once (its own process group), as a lost machine or an OOM kill would.
        The result holds stdout and stderr together, in `stdout`.
        """
        full_env = {**clean_environ(), "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"}
        full_env.update(env or {})
        started = time.monotonic()
        process = subprocess.Popen(
            [str(self.executable), *args],
            cwd=self.project,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        lines: list[str] = []
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if on_line(line):
                    kill()
            process.wait()
        finally:
            watchdog.cancel()
            kill()  # nothing of the run outlives it
        elapsed = time.monotonic() - started
        print(f"meltano {' '.join(args)}: exit {process.returncode} in {elapsed:.1f}s")
        return subprocess.CompletedProcess(process.args, process.returncode, "".join(lines), "")


@pytest.fixture(scope="session")
def meltano() -> Meltano:
    """The meltano CLI bound to the repository's project, with its plugins installed.

    ``meltano install`` runs once per session (a few seconds when nothing changed), so
    the plugins always match meltano.yml.
    """
    executable = find_meltano()
    if executable is None:
        _unavailable("meltano not found: run scripts/install_meltano.sh (or set MELTANO_BIN)")
    runner = Meltano(executable, REPO_ROOT)
    runner.run("install", timeout=1200)
    return runner


@pytest.fixture
def meltano_project(meltano: Meltano, tmp_path: Path) -> Meltano:
    """The meltano CLI bound to a copy of the project in a temporary directory.

    The copy has the repository's meltano.yml and shares its installed plugins
    (``.meltano`` is a symlink), but not its ``.env``: a developer's own settings
    never leak into a test run.
    """
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(REPO_ROOT / "meltano.yml", project / "meltano.yml")
    (project / ".meltano").symlink_to(REPO_ROOT / ".meltano", target_is_directory=True)
    return Meltano(meltano.executable, project)


@pytest.fixture
def meltano_env(tmp_path: Path) -> dict[str, str]:
    """Settings for one isolated Meltano run; tests add the sandbox and database ones."""
    return {
        "MELTANO_ENVIRONMENT": "dev",
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TAP_ANALYTICS_API_KEY": API_KEY,
        "TARGET_DUCKDB_LOCAL_PATH": str(tmp_path / "warehouse.duckdb"),
    }


@pytest.fixture
def target_postgres_env(pg_database: PostgresParams) -> dict[str, str]:
    """Environment variables pointing ``target-postgres`` at this test's database."""
    return {
        "TARGET_POSTGRES_HOST": pg_database.host,
        "TARGET_POSTGRES_PORT": str(pg_database.port),
        "TARGET_POSTGRES_USER": pg_database.user,
        "TARGET_POSTGRES_PASSWORD": pg_database.password,
        "TARGET_POSTGRES_DATABASE": pg_database.dbname,
    }


@pytest.fixture
def run_into_postgres(
    meltano_project: Meltano, meltano_env: dict[str, str], target_postgres_env: dict[str, str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(sandbox, **env)``: the job into this test's database; `env` adds tap settings."""

    def run(sandbox: Any, **env: str) -> subprocess.CompletedProcess[str]:
        job_env = {**meltano_env, **target_postgres_env, "TAP_ANALYTICS_API_URL": sandbox.url}
        job_env.update(env)
        return meltano_project.run("run", "tap-analytics", "target-postgres", env=job_env)

    return run
