"""Account groups for the tap_analytics DAG: the groups file, the accounts the key sees, settings.

Also a command that writes a first groups file from the accounts the key can see:

    .venv-airflow/bin/python orchestrate/airflow/dags/tap_analytics_groups.py [--size 50]

It needs only the standard library (any Python 3.10+ runs it) and the Meltano project, whose
`meltano config` resolves the tap's `api_url` and `api_key` exactly as `meltano run` will.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The API's limit of ids in one `user_id` filter, and so of a tap-analytics job's `user_ids`.
MAX_GROUP_SIZE = 50
#: Group names become Meltano state id suffixes and Airflow map index labels: keep them plain.
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
#: The state id suffix of the reconciliation run (tap_analytics_reconcile).
RESERVED_GROUP = "reconcile"
ACCOUNT_ID = re.compile(r"\d{1,20}", re.ASCII)
PAGE_SIZE = 100
#: Attempts of one accounts-listing request against 429, 5xx and network errors.
ATTEMPTS = 6
REPO_ROOT = Path(__file__).resolve().parents[3]


class GroupsError(ValueError):
    """The groups file is missing, malformed, or puts one account in two groups."""


class AccountsError(RuntimeError):
    """The accounts the key can see could not be listed."""


class DecimalFromEnvError(AccountsError):
    """Meltano (4.4.1) cannot pass a `kind: decimal` setting given in the environment.

    It parses the value into a Decimal, then fails to write the plugin's JSON config with it.
    """


@dataclasses.dataclass(frozen=True)
class Settings:
    """The DAG's settings, from the worker's environment (see the README's Airflow section)."""

    project: Path
    meltano: str
    loader: str
    groups_file: Path
    pool: str
    pool_slots: int
    connection_id: str
    group_retries: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read TAP_ANALYTICS_* and MELTANO_BIN; every one has a default but the groups file."""
        project = Path(environ.get("TAP_ANALYTICS_MELTANO_PROJECT") or REPO_ROOT)
        bundled = project / ".venv-meltano" / "bin" / "meltano"
        meltano = environ.get("MELTANO_BIN") or (
            str(bundled) if bundled.exists() else shutil.which("meltano") or "meltano"
        )
        groups_file = environ.get("TAP_ANALYTICS_ACCOUNT_GROUPS") or str(
            project / "account_groups.json"
        )
        slots = environ.get("TAP_ANALYTICS_POOL_SLOTS") or "4"
        if not slots.isdigit() or int(slots) < 1:
            msg = f"TAP_ANALYTICS_POOL_SLOTS must be a whole number of at least 1, not {slots!r}"
            raise ValueError(msg)
        retries = environ.get("TAP_ANALYTICS_GROUP_RETRIES") or "2"
        if not retries.isdigit():
            msg = f"TAP_ANALYTICS_GROUP_RETRIES must be a whole number, not {retries!r}"
            raise ValueError(msg)
        return cls(
            project=project,
            meltano=meltano,
            loader=environ.get("TAP_ANALYTICS_LOADER") or "target-postgres",
            groups_file=Path(groups_file),
            pool=environ.get("TAP_ANALYTICS_POOL") or "tap_analytics",
            pool_slots=int(slots),
            connection_id=environ.get("TAP_ANALYTICS_CONNECTION_ID") or "tap_analytics",
            group_retries=int(retries),
        )

    @property
    def rate_limit_share(self) -> float:
        """Each group's share of the key's rate limit: the pool runs at most pool_slots at once."""
        return 1 / self.pool_slots


# --------------------------------------------------------------------------- the groups file


def parse_groups(text: str, source: str = "the groups file") -> dict[str, list[str]]:
    """Return {group: account ids} from JSON, or raise GroupsError naming every problem."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise GroupsError(f"{source} is not JSON: {error}") from None
    if not isinstance(raw, dict) or not raw:
        raise GroupsError(f"{source} must be a JSON object of group name -> list of account ids")
    problems: list[str] = []
    owner: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, ids in raw.items():
        if not GROUP_NAME.fullmatch(name):
            problems.append(f"group name {name!r}: use letters, digits, '-' and '_' (max 64)")
        elif name == RESERVED_GROUP:
            problems.append(f"group name {name!r} is the reconciliation's state id suffix")
        # Ids are strings: JSON numbers lose digits past 2**53, and ids are up to 20 digits.
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            problems.append(f"group {name!r}: give a list of account ids as strings")
            continue
        if not 1 <= len(ids) <= MAX_GROUP_SIZE:
            problems.append(f"group {name!r}: {len(ids)} accounts, allowed 1 to {MAX_GROUP_SIZE}")
        for account in ids:
            if not ACCOUNT_ID.fullmatch(account):
                problems.append(f"group {name!r}: {account!r} is not an account id (digits)")
            elif account in owner:
                where = "twice" if owner[account] == name else f"and in {owner[account]!r}"
                problems.append(f"account {account} is in group {name!r} {where}")
            else:
                owner[account] = name
        groups[name] = list(ids)
    if problems:
        raise GroupsError(f"{source}: " + "; ".join(problems))
    return groups


def load_groups(path: Path) -> dict[str, list[str]]:
    """Read and check the groups file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        msg = (
            f"cannot read the groups file {path} ({error.strerror}): set "
            "TAP_ANALYTICS_ACCOUNT_GROUPS, or write one with tap_analytics_groups.py"
        )
        raise GroupsError(msg) from None
    return parse_groups(text, str(path))


def split_accounts(accounts: Sequence[str], size: int = MAX_GROUP_SIZE) -> dict[str, list[str]]:
    """Cut sorted accounts into groups group-01, group-02, ... of at most `size` ids."""
    ordered = sorted(set(accounts), key=lambda i: (len(i), i))
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    width = max(2, len(str(len(chunks))))
    return {f"group-{n:0{width}d}": chunk for n, chunk in enumerate(chunks, start=1)}


@dataclasses.dataclass(frozen=True)
class Coverage:
    """How the groups file compares with the accounts the key can see."""

    unassigned: list[str]  # the key sees them, no group holds them: they are not loaded
    not_visible: list[str]  # a group holds them, the key does not see them (yet)


def coverage(groups: Mapping[str, Sequence[str]], visible: Sequence[str]) -> Coverage:
    """Compare the groups with the key's accounts."""
    grouped = {account for ids in groups.values() for account in ids}
    seen = set(visible)
    return Coverage(
        unassigned=sorted(seen - grouped, key=lambda i: (len(i), i)),
        not_visible=sorted(grouped - seen, key=lambda i: (len(i), i)),
    )


# --------------------------------------------------------------------------- one group's run

#: What a group's private Meltano system directory does not share with the project's.
_PRIVATE = frozenset({"run", "logs", "groups", "meltano.db"})


def group_command(settings: Settings, group: str) -> list[str]:
    """The command a group runs (no secret in it: Airflow logs it)."""
    return [settings.meltano, "run", f"--state-id-suffix={group}", "tap-analytics", settings.loader]


def meltano_stores(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """Where the project keeps its system database and state, as environment variables.

    Resolved by Meltano with the project's own system directory, so that a group run in a
    private one (see group_env) still reads and writes the project's state.
    """
    config = meltano_json(settings, env, "config", "--unsafe", "print", "meltano")
    stores = {"MELTANO_DATABASE_URI": str(config["database_uri"])}
    backend = config.get("state_backend") or {}
    if isinstance(backend, dict) and backend.get("uri"):
        stores["MELTANO_STATE_BACKEND_URI"] = str(backend["uri"])
    return stores


def group_env(
    settings: Settings,
    base: Mapping[str, str],
    group: str,
    user_ids: Sequence[str],
    rate_limit_share: str | None,
) -> dict[str, str]:
    """The environment of a group's ``meltano run``: its accounts, its share, its own run dir.

    Meltano 4 writes a tap's incoming state to one file per project
    (``.meltano/run/tap-analytics/state.json``): two groups starting at once in one project
    could each start from the other's bookmarks. So each group gets its own system directory
    (``MELTANO_SYS_DIR_ROOT``) whose plugin directories link to the project's installed
    plugins, with the project's system database and state backend named explicitly
    (a state backend configured relative to ``$MELTANO_SYS_DIR_ROOT`` would move with it).
    """
    # A worker that names its system database (as on a cluster) needs no look-up.
    stores = {} if base.get("MELTANO_DATABASE_URI") else meltano_stores(settings, base)
    env = {**base, **stores}
    sys_dir = Path(base.get("MELTANO_SYS_DIR_ROOT") or settings.project / ".meltano").resolve()
    own = sys_dir / "groups" / group
    own.mkdir(parents=True, exist_ok=True)
    for entry in sys_dir.iterdir():
        link = own / entry.name
        if entry.is_dir() and entry.name not in _PRIVATE and not link.exists():
            link.symlink_to(entry, target_is_directory=True)
    env["MELTANO_SYS_DIR_ROOT"] = str(own)
    # Meltano reads array settings from the environment as JSON.
    env["TAP_ANALYTICS_USER_IDS"] = json.dumps(list(user_ids))
    if rate_limit_share is None:
        env.pop("TAP_ANALYTICS_RATE_LIMIT_SHARE", None)
    else:
        env["TAP_ANALYTICS_RATE_LIMIT_SHARE"] = rate_limit_share
    return env


# --------------------------------------------------------------------------- the API


def meltano_json(settings: Settings, env: Mapping[str, str], *args: str) -> dict[str, Any]:
    """Run ``meltano ARGS`` in the project and parse what it prints (never logged: secrets)."""
    result = subprocess.run(
        [settings.meltano, *args],
        cwd=settings.project,
        env=dict(env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=300,
    )
    command = "meltano " + " ".join(a for a in args if a != "--unsafe")
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        last = next((line for line in reversed(lines) if "[error" in line), lines[-1])
        msg = f"{command} exited {result.returncode}: {last}"
        if "Decimal is not JSON serializable" in result.stderr:
            raise DecimalFromEnvError(msg)
        raise AccountsError(msg)
    parsed = json.loads(result.stdout)
    if not isinstance(parsed, dict):
        raise AccountsError(f"{command} did not print a JSON object")
    return parsed


def tap_config(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """The tap's resolved configuration, as `meltano run` will see it (secrets included)."""
    return meltano_json(settings, env, "config", "--unsafe", "print", "tap-analytics")


def usable_rate_limit_share(settings: Settings, env: Mapping[str, str]) -> str | None:
    """The groups' rate_limit_share if this Meltano can pass it to the tap, else None.

    Meltano 4.4.1 fails every run given a decimal setting in the environment (DecimalFromEnvError);
    the groups then run without the share, pacing by X-RateLimit-Remaining alone.
    """
    share = repr(settings.rate_limit_share)
    try:
        tap_config(settings, {**env, "TAP_ANALYTICS_RATE_LIMIT_SHARE": share})
    except DecimalFromEnvError:
        log.warning(
            "This Meltano cannot pass rate_limit_share (a decimal setting) from the environment: "
            "the groups run without it and share the key by adaptive pacing only"
        )
        return None
    return share


def _get(url: str, api_key: str, timeout: float) -> dict[str, Any]:
    """GET one page, retrying 429 (after Retry-After), 5xx and network errors."""
    headers = {"X-API-Key": api_key, "Accept": "application/json"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http(s), checked)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                page: dict[str, Any] = json.load(response)
                return page
        except urllib.error.HTTPError as error:
            code = _error_code(error)
            if error.code != 429 and error.code < 500:
                msg = (
                    f"listing the key's accounts: the API answered {error.code} {code}; "
                    "check the tap's api_key and api_url"
                )
                raise AccountsError(msg) from None
            if attempt == ATTEMPTS:
                msg = f"listing the key's accounts: {error.code} {code} after {ATTEMPTS} attempts"
                raise AccountsError(msg) from None
            retry_after = error.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.isdigit() else 2.0**attempt
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            if attempt == ATTEMPTS:
                reason = getattr(error, "reason", error)
                msg = f"listing the key's accounts: {reason} after {ATTEMPTS} attempts"
                raise AccountsError(msg) from None
            wait = 2.0**attempt
        log.info("listing accounts: attempt %d failed, retrying in %.0f s", attempt, wait)
        time.sleep(wait)
    raise AssertionError("unreachable")


def _error_code(error: urllib.error.HTTPError) -> str:
    """The API's error code from an error body, or the HTTP reason."""
    try:
        return str(json.loads(error.read())["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return str(error.reason)


def list_accounts(api_url: str, api_key: str, timeout: float = 30) -> list[str]:
    """Every account id the key can see (`GET /v1/users`, 100 a page: one request per 100)."""
    if not api_url.startswith(("http://", "https://")):
        raise AccountsError(f"the tap's api_url must start with http:// or https://: {api_url!r}")
    base = api_url.rstrip("/") + "/v1/users?limit=" + str(PAGE_SIZE)
    accounts: set[str] = set()
    offset = 0
    while True:
        page = _get(f"{base}&offset={offset}", api_key, timeout)
        rows = page.get("data") or []
        accounts.update(str(row["id"]) for row in rows)
        if len(rows) < PAGE_SIZE:
            return sorted(accounts, key=lambda i: (len(i), i))
        offset += PAGE_SIZE


def visible_accounts(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """The accounts the tap's key can see, with its api_url and api_key resolved by Meltano."""
    config = tap_config(settings, env)
    api_key = config.get("api_key")
    if not api_key:
        msg = "the tap has no api_key: set TAP_ANALYTICS_API_KEY or the Airflow connection"
        raise AccountsError(msg)
    api_url = str(config.get("api_url") or "https://api.example.com")
    timeout = float(config.get("request_timeout") or 30)
    return list_accounts(api_url, str(api_key), timeout)


# --------------------------------------------------------------------------- the command


def main(argv: Sequence[str] | None = None) -> int:
    """Write a first groups file from the accounts the key can see."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--size",
        type=int,
        default=MAX_GROUP_SIZE,
        help=f"accounts per group, 1 to {MAX_GROUP_SIZE} (default {MAX_GROUP_SIZE})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="file to write (default $TAP_ANALYTICS_ACCOUNT_GROUPS, else account_groups.json "
        "in the Meltano project)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    options = parser.parse_args(argv)
    if not 1 <= options.size <= MAX_GROUP_SIZE:
        parser.error(f"--size must be 1 to {MAX_GROUP_SIZE}")
    settings = Settings.from_env()
    output: Path = options.output or settings.groups_file
    if output.exists() and not options.force:
        parser.error(f"{output} exists: edit it, or pass --force to overwrite it")
    try:
        accounts = visible_accounts(settings, os.environ)
    except AccountsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    groups = split_accounts(accounts, options.size)
    output.write_text(json.dumps(groups, indent=2) + "\n", encoding="utf-8")
    size, count = options.size, len(accounts)
    print(f"wrote {len(groups)} groups of at most {size} of the {count} accounts to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
