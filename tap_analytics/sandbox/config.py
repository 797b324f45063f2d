"""The sandbox switches: one dataclass for the Python API, the CLI and the admin endpoint."""

from __future__ import annotations

import typing as t
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("429", "500", "502", "503", "504", "reset", "stall", "truncated")
LIFETIME_SCOPE = "insights:lifetime"
READ_SCOPE = "read"
FULL_SCOPES = (READ_SCOPE, LIFETIME_SCOPE)
DEFAULT_RATE_LIMIT = 600
RATE_WINDOW_STARTS = ("first_request", "clock")
MAX_RECORDS_PER_RESOURCE = 5_000_000
# Fixed when the server is built: changing them would mean rebuilding the dataset or socket.
STATIC_SWITCHES = frozenset(
    {"records_per_resource", "accounts", "seed", "host", "port", "frozen_clock"}
)
_NON_NEGATIVE = (
    "latency_ms",
    "stall_seconds",
    "stall_seconds_max",
    "mutate_every",
    "mutate_updates",
    "mutate_inserts",
    "mutate_deletes",
)


def _default_api_keys() -> dict[str, tuple[str, ...]]:
    """Return the two stock keys: one with every scope, one without the lifetime insights."""
    return {
        "sandbox-key": FULL_SCOPES,
        "sandbox-key-no-lifetime": (READ_SCOPE,),
    }


@dataclass
class SandboxConfig:
    """Every switch of the sandbox; all have defaults, so `SandboxConfig()` is a working server."""

    records_per_resource: int = field(
        default=100, metadata={"help": "initial records in each of the 7 resources"}
    )
    seed: int = field(default=1, metadata={"help": "seed of the data, faults and mutations"})
    accounts: int = field(
        default=0,
        metadata={
            "help": "accounts owning the records (0: one per record); users and their "
            "lifetime insights have one record per account"
        },
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=0, metadata={"help": "port to listen on (0: a free port)"})
    api_keys: dict[str, tuple[str, ...]] = field(
        default_factory=_default_api_keys,
        metadata={"help": "API key and its scopes, KEY or KEY=SCOPE,SCOPE (repeatable)"},
    )
    latency_ms: float = field(default=0.0, metadata={"help": "delay added to every API response"})
    rate_limit: int | None = field(
        default=None, metadata={"help": "requests per window and key (default: unlimited)"}
    )
    rate_window: float = field(default=60.0, metadata={"help": "rate limit window in seconds"})
    rate_window_start: str = field(
        default="first_request",
        metadata={
            "help": "where rate limit windows start: first_request (a key's window opens with "
            "its first request after the last one closed) or clock (every rate_window seconds of "
            "the wall clock, the same for every key)"
        },
    )
    fault_rate: float = field(
        default=0.0, metadata={"help": "probability that an API request gets a fault"}
    )
    faults: tuple[str, ...] = field(
        default=FAULT_KINDS,
        metadata={"help": "fault kinds, comma-separated: " + ",".join(FAULT_KINDS)},
    )
    stall_seconds: float = field(
        default=5.0, metadata={"help": "how long a stall fault waits before answering"}
    )
    stall_seconds_max: float = field(
        default=0.0,
        metadata={
            "help": "with a value above stall_seconds, each stall waits a random (seeded) time "
            "between the two"
        },
    )
    fast_pages: bool = field(
        default=False,
        metadata={
            "help": "keep every page served as its JSON bytes (gzip-compressed when asked so) "
            "and answer the same page again from them: a server that costs next to nothing per "
            "page, for measuring a client's own CPU"
        },
    )
    missing_total: bool = field(default=False, metadata={"help": "omit paging.total always"})
    missing_total_rate: float = field(
        default=0.0, metadata={"help": "probability of omitting paging.total"}
    )
    frozen_clock: bool = field(
        default=False,
        metadata={"help": "the server's clock stands still until advanced (for tests)"},
    )
    mutate_every: int = field(
        default=0, metadata={"help": "mutate the data before every N-th list request (0: off)"}
    )
    mutate_updates: int = field(default=1, metadata={"help": "records updated per mutation"})
    mutate_inserts: int = field(default=1, metadata={"help": "records inserted per mutation"})
    mutate_deletes: int = field(default=1, metadata={"help": "records deleted per mutation"})
    failing_user_ids: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "account ids, comma-separated: a list request whose user_id filter names"
            " one of them gets a 500 internal_error, every time"
        },
    )

    hidden_user_ids: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "account ids, comma-separated, that no key can see (yet): their records are"
            " in no list until the switch is changed (an owner granting access)"
        },
    )

    def __post_init__(self) -> None:
        """Normalise values coming from JSON or the CLI, and reject impossible ones early."""
        if isinstance(self.faults, str):
            self.faults = tuple(kind for kind in self.faults.split(",") if kind.strip())
        self.faults = tuple(str(kind).strip() for kind in self.faults)
        self.failing_user_ids = _id_list(self.failing_user_ids)
        self.hidden_user_ids = _id_list(self.hidden_user_ids)
        self.api_keys = {str(key): tuple(scopes) for key, scopes in self.api_keys.items()}
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        if not 1 <= self.records_per_resource <= MAX_RECORDS_PER_RESOURCE:
            raise ValueError(f"records_per_resource must be 1..{MAX_RECORDS_PER_RESOURCE}")
        if self.accounts < 0:
            raise ValueError("accounts must not be negative")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 (or None for no limit)")
        for name in ("fault_rate", "missing_total_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")
        if self.rate_window_start not in RATE_WINDOW_STARTS:
            raise ValueError(f"rate_window_start must be one of {', '.join(RATE_WINDOW_STARTS)}")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def to_dict(self) -> dict[str, Any]:
        """Return the switches as plain JSON-friendly data (for the admin endpoint)."""
        return asdict(self)


def _id_list(ids: str | t.Iterable[object]) -> tuple[str, ...]:
    """Account ids from the CLI (`a,b`) or JSON (a list), stripped, blanks dropped."""
    items = ids.split(",") if isinstance(ids, str) else ids
    return tuple(text for item in items if (text := str(item).strip()))
