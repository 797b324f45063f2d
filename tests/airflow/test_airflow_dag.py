"""The Airflow deployment for real: Airflow from the lock, the sandbox, Meltano, PostgreSQL.

1. ``airflow dags test tap_analytics`` with three groups (one account of the key in none):
   each task instance's state from Airflow's metadata DB, every group's accounts complete in
   PostgreSQL and nothing of the ungrouped one, three Meltano state ids; then a second DAG run
   with one group's accounts failing at the API: that group alone fails, the others load only
   what changed, and the failed group's state is untouched.
2. Three groups written by the groups command from the key's accounts, their ``meltano run``
   commands at once (as the pool runs them), built by the DAG's own helpers, into one
   PostgreSQL under a tight rate limit: complete, no 429, each group's state its own.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tap_analytics.sandbox import API_KEY
from tap_analytics.tap import STREAM_NAMES as STREAMS

pytestmark = pytest.mark.airflow

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "orchestrate" / "airflow" / "dags"

ACCOUNTS = 60  # the sandbox has one account per user record
GROUPS = ("alpha", "beta", "gamma")
LOADER = "target-postgres"
#: How target-postgres fails when another loader created the same table (or schema) a moment
#: before: a unique violation in the catalog, or the relation already existing.
DDL_RACE = ("pg_type_typname_nsp_index", "pg_namespace_nspname_index", "already exists")


def account_of(stream: str, record: dict[str, Any]) -> str:
    """The account a record belongs to."""
    return str(record["id"] if stream == "users" else record["user_id"])


def only_accounts(snapshot: dict[str, list[dict[str, Any]]], accounts: set[str]) -> dict:
    """The sandbox's records of some accounts."""
    return {
        stream: [r for r in records if account_of(stream, r) in accounts]
        for stream, records in snapshot.items()
    }


def three_groups(snapshot: dict[str, list[dict[str, Any]]]) -> tuple[dict, str]:
    """Groups of 20, 20 and 19 of the sandbox's accounts, and the one left out."""
    ids = sorted(r["id"] for r in snapshot["users"])
    assert len(ids) == ACCOUNTS
    groups = {"alpha": ids[0:20], "beta": ids[20:40], "gamma": ids[40:59]}
    return groups, ids[59]


def state_ids(meltano: Any, env: dict[str, str]) -> set[str]:
    """The Meltano state ids in this test's system database."""
    result = meltano.run("state", "list", env=env)
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def states_of(env: dict[str, str]) -> dict[str, Any]:
    """{group: its Meltano state}, read from the system database (one query, not one CLI each)."""
    path = env["MELTANO_DATABASE_URI"].removeprefix("sqlite:///")
    prefix = f"dev:tap-analytics-to-{LOADER}:"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT state_id, completed_state FROM state").fetchall()
    return {
        state_id.removeprefix(prefix): json.loads(state)
        for state_id, state in rows
        if state_id.startswith(prefix)
    }


def task_states(airflow_home: Path, run_id: str) -> dict[str, str]:
    """{task (mapped tasks by group name): state} of one DAG run, from Airflow's metadata DB."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, rendered_map_index, state FROM task_instance "
            "WHERE dag_id = 'tap_analytics' AND run_id = ?",
            [run_id],
        ).fetchall()
    return {f"{task}[{label}]" if label else task: state for task, label, state in rows}


def problems(output: str) -> str:
    """The lines of a DAG run's output that say what failed (for assertion messages)."""
    lines = output.splitlines()
    # Meltano writes a failure's message on the lines after its "[error" line.
    picked = [
        "\n".join(lines[n : n + 3])
        for n, line in enumerate(lines)
        if any(word in line for word in ("ERROR", "CRITICAL", "[error", "Error:"))
    ]
    return "\n".join(picked[-20:]) or output[-4000:]


def last_run_id(airflow_home: Path) -> str:
    """The newest run of the DAG."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        row = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'tap_analytics' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row, "airflow dags test created no DAG run"
    return str(row[0])


def written_after(pg_database: Any, mark: Any) -> int:
    """Rows target-postgres wrote in batches after `mark` (an _sdc_batched_at value)."""
    with pg_database.connect() as conn:
        return sum(
            conn.execute(
                f'SELECT count(*) FROM tap_analytics."{stream}" '  # noqa: S608 (fixed names)
                "WHERE _sdc_batched_at > %s",
                [mark],
            ).fetchone()[0]
            for stream in STREAMS
        )


def last_batch(pg_database: Any) -> Any:
    """The newest _sdc_batched_at in the tables."""
    with pg_database.connect() as conn:
        return max(
            conn.execute(
                f'SELECT max(_sdc_batched_at) FROM tap_analytics."{stream}"'  # noqa: S608
            ).fetchone()[0]
            for stream in STREAMS
        )


@pytest.fixture
def deployment(
    meltano_project: Any,
    meltano_env: dict[str, str],
    target_postgres_env: dict[str, str],
    meltano_sys_dir: Path,
    worker_environ: dict[str, str],
    tmp_path: Path,
) -> dict[str, str]:
    """The environment a worker would have: Meltano, the loader, the groups file, no sandbox."""
    return {
        **worker_environ,
        **meltano_env,
        **target_postgres_env,
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_SYS_DIR_ROOT": str(meltano_sys_dir),
        "MELTANO_BIN": str(meltano_project.executable),
        "TAP_ANALYTICS_MELTANO_PROJECT": str(meltano_project.project),
        "TAP_ANALYTICS_ACCOUNT_GROUPS": str(tmp_path / "account_groups.json"),
        "TAP_ANALYTICS_LOADER": LOADER,
        "TAP_ANALYTICS_POOL_SLOTS": str(len(GROUPS)),
    }


def test_dag_runs_each_group_alone(
    airflow_bin: Path,
    deployment: dict[str, str],
    meltano_project: Any,
    pg_database: Any,
    pg_checks: ModuleType,
    start_sandbox: Any,
    tmp_path: Path,
) -> None:
    sb = start_sandbox(records_per_resource=ACCOUNTS, seed=3)
    first = sb.snapshot()
    groups, left_out = three_groups(first)
    Path(deployment["TAP_ANALYTICS_ACCOUNT_GROUPS"]).write_text(json.dumps(groups))
    airflow_home = tmp_path / "airflow-home"
    env = {
        **deployment,
        "TAP_ANALYTICS_API_URL": sb.url,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The failing group fails for good at once (dags test would wait out a retry delay).
        "TAP_ANALYTICS_GROUP_RETRIES": "0",
    }

    def airflow(*args: str) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            [str(airflow_bin), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        elapsed = time.monotonic() - started
        print(f"airflow {' '.join(args)}: exit {result.returncode} in {elapsed:.1f}s")
        assert API_KEY not in result.stdout + result.stderr, "the API key reached Airflow's output"
        return result

    migrate = airflow("db", "migrate")
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    # Run 1: every group loads; the account in no group is reported and not loaded.
    run = airflow("dags", "test", "tap_analytics")
    output = run.stdout + run.stderr
    states = task_states(airflow_home, last_run_id(airflow_home))
    assert states == {
        "check_groups": "success",
        "run_group[alpha]": "success",
        "run_group[beta]": "success",
        "run_group[gamma]": "success",
        "accounts_in_groups": "failed",
    }, problems(output)
    assert any(left_out in line and "in no group" in line for line in output.splitlines())
    grouped = {account for ids in groups.values() for account in ids}
    tables = pg_checks.assert_matches_sandbox(
        pg_database, only_accounts(first, grouped), deleted={}
    )
    assert all(tables[stream] for stream in STREAMS), "a stream loaded nothing"
    assert {f"dev:tap-analytics-to-{LOADER}:{g}" for g in GROUPS} <= state_ids(meltano_project, env)

    # Run 2: beta's accounts fail at the API; alpha and gamma load what changed, alone.
    beta_state = states_of(env)["beta"]
    mark = last_batch(pg_database)
    sb.mutate(updates=12, inserts=6)
    second = sb.snapshot()
    sb.configure(failing_user_ids=(groups["beta"][3],))
    env["TAP_ANALYTICS_MAX_RETRIES"] = "0"  # the failing group fails at once, not after retries
    run = airflow("dags", "test", "tap_analytics")
    states = task_states(airflow_home, last_run_id(airflow_home))
    output = run.stdout + run.stderr
    assert states["run_group[beta]"] == "failed", problems(output)
    assert states["run_group[alpha]"] == states["run_group[gamma]"] == "success", problems(output)
    others = set(groups["alpha"]) | set(groups["gamma"])
    expected = {
        stream: only_accounts(second, others)[stream]
        + only_accounts(first, set(groups["beta"]))[stream]
        for stream in STREAMS
    }
    pg_checks.assert_matches_sandbox(pg_database, expected, deleted={})
    assert states_of(env)["beta"] == beta_state, "the failed group's state moved"
    # Incremental: what changed is written again, not every record.
    before, after = only_accounts(first, others), only_accounts(second, others)
    changed = sum(
        len(
            {json.dumps(r, sort_keys=True) for r in after[s]}
            - {json.dumps(r, sort_keys=True) for r in before[s]}
        )
        for s in STREAMS
    )
    rewritten = written_after(pg_database, mark)
    total = sum(len(after[s]) for s in STREAMS)
    assert changed > 0, "sb.mutate() changed nothing in alpha or gamma: the test proves nothing"
    assert changed <= rewritten < total / 4, (changed, rewritten, total)


def test_groups_run_at_once_without_429(
    deployment: dict[str, str],
    groups_module: ModuleType,
    meltano_project: Any,
    pg_database: Any,
    pg_checks: ModuleType,
    start_sandbox: Any,
) -> None:
    # A limit the three groups would exceed together at the tap's default concurrency.
    sb = start_sandbox(records_per_resource=ACCOUNTS, seed=4, rate_limit=12, rate_window=2.0)
    snapshot = sb.snapshot()
    base = {**deployment, "TAP_ANALYTICS_API_URL": sb.url}
    # The groups: a first file written by the command, from the accounts the key can see.
    write = subprocess.run(
        [sys.executable, groups_module.__file__, "--size", "20"],
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert write.returncode == 0, write.stderr
    assert API_KEY not in write.stdout + write.stderr
    groups = json.loads(Path(base["TAP_ANALYTICS_ACCOUNT_GROUPS"]).read_text())
    assert [len(ids) for ids in groups.values()] == [20, 20, 20], groups
    assert sorted(a for ids in groups.values() for a in ids) == sorted(
        r["id"] for r in snapshot["users"]
    )
    settings = groups_module.Settings.from_env(base)
    share = groups_module.usable_rate_limit_share(settings, base)
    procs = {}
    for group, ids in groups.items():
        env = groups_module.group_env(settings, base, group, ids, share)
        procs[group] = subprocess.Popen(
            groups_module.group_command(settings, group),
            cwd=settings.project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    started = time.monotonic()
    outputs = {group: proc.communicate(timeout=900)[0] for group, proc in procs.items()}
    print(f"three groups at once: {time.monotonic() - started:.1f}s")
    # Into empty tables, two target-postgres may race to create one: the loser fails on
    # pg_type's unique index and its Airflow retry (run_group's retries) succeeds. Nothing
    # else may fail.
    for group in [g for g, proc in procs.items() if proc.returncode]:
        lost = any(marker in outputs[group] for marker in DDL_RACE)
        assert lost, f"{group}:\n{problems(outputs[group])}"
        print(f"{group} lost the CREATE TABLE race; retried")
        retry = subprocess.run(
            groups_module.group_command(settings, group),
            cwd=settings.project,
            env=groups_module.group_env(settings, base, group, groups[group], share),
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert retry.returncode == 0, f"{group}:\n{problems(retry.stdout + retry.stderr)}"
    stats = sb.stats()
    print(f"sandbox: {stats['requests']} requests, {stats['rate_limited']} refused with 429")
    assert stats["rate_limited"] == 0, stats
    grouped = {account for ids in groups.values() for account in ids}
    pg_checks.assert_matches_sandbox(pg_database, only_accounts(snapshot, grouped), deleted={})
    # Each group's state holds its own accounts' bookmarks, not another group's.
    states = states_of(base)
    assert sorted(states) == sorted(groups), states
    assert len({json.dumps(s, sort_keys=True) for s in states.values()}) == len(groups), states
    for group, state in states.items():
        text = json.dumps(state)
        strangers = [a for g, ids in groups.items() if g != group for a in ids if a in text]
        assert not strangers, f"{group}'s state names other groups' accounts: {strangers[:3]}"
