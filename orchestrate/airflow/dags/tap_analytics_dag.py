"""Airflow DAGs that run tap-analytics through Meltano, one mapped task per account group.

* ``tap_analytics`` (daily): ``check_groups`` checks the groups file against the accounts the
  key can see, then ``run_group`` runs ``meltano run --state-id-suffix=<group> tap-analytics
  <loader>`` once per group, at most ``TAP_ANALYTICS_POOL_SLOTS`` at once, each with its own
  state; ``accounts_in_groups`` fails (without stopping any group) while the key sees an
  account that no group holds.
* ``tap_analytics_reconcile`` (weekly): one run without ``user_ids`` and with
  ``reconcile_deletes``, holding every slot of the pool so that no group writes the same
  tables meanwhile; skipped until the tap has that setting.

Settings come from the worker's environment (README, *Orchestrating with Airflow*). The API key
reaches Meltano through the environment or the Airflow connection ``tap_analytics``, never
through a templated field: Airflow shows those in its UI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import BaseHook, dag, get_current_context, task
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
)
from tap_analytics_groups import (
    RESERVED_GROUP,
    AccountsError,
    GroupsError,
    Settings,
    coverage,
    group_command,
    group_env,
    load_groups,
    meltano_json,
    usable_rate_limit_share,
    visible_accounts,
)

log = logging.getLogger(__name__)
# Parse-time settings: the pool, its size and the loader shape the DAG itself.
SETTINGS = Settings.from_env()
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: The tap setting the reconciliation needs (issue 12); the reconcile task is inert without it.
RECONCILE_SETTING = "reconcile_deletes"


def meltano_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The worker's environment for Meltano, with the key from the Airflow connection if any.

    Read at run time, inside the task: nothing here is a templated field.
    """
    env = dict(os.environ)
    try:
        connection = BaseHook.get_connection(settings.connection_id)
    except AirflowNotFoundException:
        connection = None  # the key comes from TAP_ANALYTICS_API_KEY (or .env, meltano.yml)
    if connection is not None:
        if connection.password:
            env["TAP_ANALYTICS_API_KEY"] = connection.password
        if connection.host:
            env["TAP_ANALYTICS_API_URL"] = connection.host
    env.update(extra)
    return env


def run_meltano(command: list[str], env: Mapping[str, str], settings: Settings) -> None:
    """Run a meltano command in the project, its output in the task log; fail if it fails."""
    hook = SubprocessHook()
    try:
        result = hook.run_command(command=command, env=dict(env), cwd=str(settings.project))
    except BaseException:
        # A timeout or a kill of the task: stop meltano too, which runs in its own session.
        hook.send_sigterm()
        raise
    if result.exit_code != 0:
        msg = f"{' '.join(command[1:])} exited {result.exit_code}: {result.output}"
        raise AirflowException(msg)


@dag(
    dag_id="tap_analytics",
    schedule="@daily",
    start_date=START,
    catchup=False,
    # Two runs at once would run the same group twice, on the same state.
    max_active_runs=1,
    tags=["tap-analytics", "meltano"],
    doc_md=__doc__,
)
def tap_analytics() -> None:
    """Load every account group with its own Meltano state."""

    @task
    def check_groups() -> list[dict[str, Any]]:
        """Check the groups file against the key's accounts; return the groups to run.

        The accounts no group holds go to the XCom ``unassigned``, for ``accounts_in_groups``.
        """
        settings = Settings.from_env()
        try:
            groups = load_groups(settings.groups_file)
        except GroupsError as error:  # a file to fix: retrying cannot help
            raise AirflowFailException(str(error)) from None
        env = meltano_env(settings)
        try:
            share = usable_rate_limit_share(settings, env)
            visible = visible_accounts(settings, env)
        except AccountsError as error:
            raise AirflowException(str(error)) from None
        found = coverage(groups, visible)
        log.info(
            "%d groups hold %d accounts; the key sees %d",
            len(groups),
            sum(map(len, groups.values())),
            len(visible),
        )
        if found.unassigned:  # accounts_in_groups fails on them: the run shows it
            log.warning(
                "%d accounts the key can see are in no group and are not loaded: %s",
                len(found.unassigned),
                ", ".join(found.unassigned),
            )
        if found.not_visible:
            # Not an error: a client may grant access later; the tap backfills it then.
            log.warning(
                "%d accounts in %s are not visible to the key: %s",
                len(found.not_visible),
                settings.groups_file,
                ", ".join(found.not_visible),
            )
        get_current_context()["ti"].xcom_push(key="unassigned", value=found.unassigned)
        return [
            {"group": name, "user_ids": ids, "rate_limit_share": share}
            for name, ids in groups.items()
        ]

    @task
    def accounts_in_groups(unassigned: list[str]) -> None:
        """Fail, loudly but without stopping any group, while the key sees ungrouped accounts."""
        if unassigned:
            settings = Settings.from_env()
            msg = (
                f"{len(unassigned)} accounts the key can see are in no group and are not loaded: "
                f"{', '.join(unassigned)}. Add them to a group (at most 50 ids each) in "
                f"{settings.groups_file}"
            )
            raise AirflowFailException(msg)

    @task(
        pool=SETTINGS.pool,
        # The share below assumes at most pool_slots groups at once, whatever the pool's size.
        max_active_tis_per_dag=SETTINGS.pool_slots,
        map_index_template="{{ account_group }}",
        # A retry resumes from the group's own state. It also covers the one race of groups
        # loading at once: target-postgres creating the same new table twice (the loser
        # fails on pg_type's unique index; on its retry the table exists).
        retries=SETTINGS.group_retries,
        retry_delay=timedelta(minutes=1),
        retry_exponential_backoff=True,
    )
    def run_group(group: str, user_ids: list[str], rate_limit_share: str | None) -> None:
        """``meltano run`` for one group: its accounts and its share of the key's rate limit."""
        get_current_context()["account_group"] = group  # type: ignore[typeddict-unknown-key]
        settings = Settings.from_env()
        env = group_env(settings, meltano_env(settings), group, user_ids, rate_limit_share)
        run_meltano(group_command(settings, group), env, settings)

    checked = check_groups()
    run_group.expand_kwargs(checked)
    accounts_in_groups(checked["unassigned"])


@dag(
    dag_id="tap_analytics_reconcile",
    schedule="@weekly",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["tap-analytics", "meltano"],
    doc_md=__doc__,
)
def tap_analytics_reconcile() -> None:
    """Flag rows deleted at the API: one full read of every account, alone on the tables."""

    @task(
        pool=SETTINGS.pool,
        # Every slot: no group task writes the tables while this runs, nor starts meanwhile.
        pool_slots=SETTINGS.pool_slots,
        execution_timeout=timedelta(hours=12),
    )
    def reconcile() -> None:
        """``meltano run`` with reconcile_deletes, no user_ids: target-postgres flags by table."""
        settings = Settings.from_env()
        env = meltano_env(settings, TAP_ANALYTICS_RECONCILE_DELETES="true")
        env.pop("TAP_ANALYTICS_USER_IDS", None)
        env.pop("TAP_ANALYTICS_RATE_LIMIT_SHARE", None)  # alone on the key
        if not tap_has_setting(settings, env, RECONCILE_SETTING):
            msg = f"tap-analytics has no {RECONCILE_SETTING} setting yet: nothing to reconcile"
            raise AirflowSkipException(msg)
        run_meltano(group_command(settings, RESERVED_GROUP), env, settings)

    reconcile()


def tap_has_setting(settings: Settings, env: Mapping[str, str], name: str) -> bool:
    """Whether the installed tap declares a setting (``meltano invoke tap-analytics --about``)."""
    try:
        about = meltano_json(settings, env, "invoke", "tap-analytics", "--about", "--format=json")
    except AccountsError as error:
        raise AirflowException(str(error)) from None
    return name in about.get("settings", {}).get("properties", {})


tap_analytics()
tap_analytics_reconcile()
