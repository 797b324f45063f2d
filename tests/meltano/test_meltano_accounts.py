"""Accounts added to a job's `user_ids` arrive whole, through `meltano run` into PostgreSQL.

Two runs of `meltano run tap-analytics target-postgres` with the same Meltano state:

1. `user_ids` = 3 accounts, plus one the key may not see yet (the sandbox hides it);
2. the job's `user_ids` grown by 3 accounts, and the hidden one granted: every table then
   holds exactly the sandbox's records of the 7 accounts (ids and `updated_at`), the 3 first
   accounts' history was not read again (their unchanged rows keep the batch of run 1, the
   updates made meanwhile arrive incrementally), and `meltano state get` shows all 7 covered.

An eighth account, never in `user_ids`, stays out of every table.
"""

from __future__ import annotations

import json
import operator
from typing import Any

import pytest
from test_meltano_postgres import fetch_tables, normalise

from tap_analytics.tap import STREAM_NAMES as STREAMS

pytestmark = pytest.mark.meltano

#: Meltano's state id of `meltano run tap-analytics target-postgres` in the dev environment.
STATE_ID = "dev:tap-analytics-to-target-postgres"

Snapshot = dict[str, list[dict[str, Any]]]


def account_of(record: dict[str, Any]) -> str:
    """The account a record (or row) belongs to: users are accounts, the rest carry user_id."""
    return str(record.get("user_id") or record["id"])


def assert_tables_hold(pg_database: Any, snapshot: Snapshot, accounts: set[str]) -> Snapshot:
    """Every table holds exactly the sandbox's records of `accounts` (ids and updated_at)."""
    tables, _ = fetch_tables(pg_database)
    problems = []
    for stream in STREAMS:
        rows = tables[stream]
        strangers = {account_of(row) for row in rows} - accounts
        if strangers:
            problems.append(f"{stream}: rows of accounts out of scope {sorted(strangers)}")
        got = {row["id"]: row["updated_at"] for row in rows}
        want = {r["id"]: r["updated_at"] for r in snapshot[stream] if account_of(r) in accounts}
        assert want, f"the test needs records of these accounts in {stream}"
        missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
        if missing or extra:
            problems.append(f"{stream}: {len(missing)} records missing, {len(extra)} extra rows")
        changed = [
            record_id
            for record_id in want.keys() & got.keys()
            if operator.ne(*normalise(got[record_id], want[record_id]))
        ]
        if changed:
            problems.append(f"{stream}: {len(changed)} rows with another updated_at")
    assert not problems, "\n".join(problems)
    return tables


def coverage(state: dict[str, Any]) -> dict[str, set[str]]:
    """{stream: the accounts it has read whole}, from a Meltano state."""
    own = state["singer_state"]["tap_analytics"]
    assert own["backfills"] == {}, "a backfill is still under way"
    return {stream: set(group["ids"]) for group in own["accounts"] for stream in group["streams"]}


def test_accounts_added_to_user_ids_arrive_with_all_their_history(
    run_into_postgres: Any,
    meltano_project: Any,
    meltano_env: dict[str, str],
    pg_database: Any,
    start_sandbox: Any,
) -> None:
    sb = start_sandbox(records_per_resource=40, accounts=8, frozen_clock=True)
    accounts = sorted(r["id"] for r in sb.snapshot()["users"])
    first, added, granted_later = accounts[:3], accounts[3:6], accounts[6]
    sb.configure(hidden_user_ids=[granted_later])

    def run(user_ids: list[str]) -> str:
        # Meltano reads an array setting from the environment as JSON.
        result = run_into_postgres(sb, TAP_ANALYTICS_USER_IDS=json.dumps(user_ids))
        return result.stdout + result.stderr

    # 1. Three accounts, and a fourth in user_ids the key may not see yet.
    run([*first, granted_later])
    tables = assert_tables_hold(pg_database, sb.snapshot(), set(first))
    batch_of_run_1 = {
        stream: {row["id"]: row["_sdc_batched_at"] for row in tables[stream]} for stream in STREAMS
    }

    # Between the runs: some records change, the job gains 3 accounts, the key the fourth.
    sb.advance_clock(1)
    before = {s: {r["id"]: r["updated_at"] for r in rs} for s, rs in sb.snapshot().items()}
    sb.mutate(updates=12)
    sb.advance_clock(1)
    sb.configure(hidden_user_ids=[])
    snapshot = sb.snapshot()
    updated = {
        stream: {r["id"] for r in records if r["updated_at"] != before[stream].get(r["id"])}
        for stream, records in snapshot.items()
    }
    assert any(updated[s] & batch_of_run_1[s].keys() for s in STREAMS), "no row of run 1 updated"

    # 2. The same job with the accounts added: all of their history arrives.
    output = run([*first, *added, granted_later])
    in_scope = {*first, *added, granted_later}
    tables = assert_tables_hold(pg_database, snapshot, in_scope)
    for stream in STREAMS:
        assert f"Stream {stream}: backfilling 4 accounts new to it" in output, stream

    # The first accounts' history was not read again: their rows not updated since run 1 are
    # still those run 1 wrote (the updated ones arrived: assert_tables_hold compared them).
    reread = {
        stream: sorted(
            row["id"]
            for row in tables[stream]
            if row["id"] in batch_of_run_1[stream].keys() - updated[stream]
            and row["_sdc_batched_at"] != batch_of_run_1[stream][row["id"]]
        )
        for stream in STREAMS
    }
    assert not any(reread.values()), f"history of the first accounts read again: {reread}"
    state = json.loads(meltano_project.run("state", "get", STATE_ID, env=meltano_env).stdout)
    assert coverage(state) == {stream: in_scope for stream in STREAMS}
