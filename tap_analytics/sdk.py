"""The one seam between the tap and singer-sdk's private or final names.

The tap is fast because it replaces two loops of the SDK: the tap loop, which syncs one stream
after another (`Tap.sync_all`, final), and the record loop, which conforms and writes one record
at a time (`Stream._sync_records`, private, called by the final `Stream.sync`). Those two
overrides are here and nowhere else; every other part of the tap uses public names only (a
test says so). `check_contract()` tells, in one line, when an installed SDK no longer has what
these overrides rely on: the tap runs it at start-up, the contract test runs it in CI against
the pinned and the newest pre-release SDK.
"""

from __future__ import annotations

import inspect
import typing as t
from importlib.metadata import version

from singer_sdk import RESTStream, Stream, Tap
from typing_extensions import override

from tap_analytics.errors import AnalyticsError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from singer_sdk.helpers.types import Context
    from singer_sdk.singerlib import RecordMessage

#: The singer-sdk releases this seam was checked against (README: *Supported SDK versions*).
SUPPORTED_SDK = "~=0.54.9"

_T = t.TypeVar("_T")


class SDKContractError(AnalyticsError):
    """The installed singer-sdk lacks, or changed, a name this seam relies on."""


class SeamTap(Tap):
    """A Tap whose sync of all streams is the tap's own (`sync_selected_streams`)."""

    # Reason: Tap.sync_all is final and syncs one stream after another; the tap fetches the
    # pages of all selected streams at once. The SDK calls it from its CLI and its test kit.
    @override  # type: ignore[misc]  # Tap.sync_all is final: see the reason above
    def sync_all(self) -> None:
        self.sync_selected_streams()

    def sync_selected_streams(self) -> None:
        """Sync every selected stream (the SDK's `sync_all`, as this tap does it)."""
        raise NotImplementedError


class SeamStream(RESTStream[_T]):
    """A REST stream that writes whole pages where nothing asks for per-record handling."""

    # Reason: Stream.sync (final) writes SCHEMA, then runs this private loop, which re-walks
    # the schema for every record, flushes stdout for each, and knows one bookmark per stream.
    # Where `writes_pages()`, `write_pages()` stands in for it: pages written whole, and the
    # tap's own STATE (backfills of accounts new to a stream); otherwise the SDK's loop runs.
    @override
    def _sync_records(
        self, context: Context | None = None, *, write_messages: bool = True
    ) -> Generator[dict[str, t.Any], t.Any, t.Any]:
        if write_messages and self.writes_pages():
            self.write_pages()
            return
        yield from super()._sync_records(context, write_messages=write_messages)

    def writes_pages(self) -> bool:
        """Whether `write_pages` stands in for the SDK's record loop."""
        return False

    def write_pages(self) -> None:
        """Write this stream's RECORD and STATE messages, a page at a time."""
        raise NotImplementedError


def record_messages(stream: Stream, record: dict[str, t.Any]) -> Iterator[RecordMessage]:
    """The RECORD messages of one record as the SDK's loop makes them.

    Deselected fields are dropped and stream maps applied (a message per map's alias, none
    where a map filters the record out).
    """
    # Reason: the SDK has no public way to apply a stream's maps and selection to a record.
    return stream._generate_record_messages(record)


def _parameters(function: Callable[..., t.Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _uses_name(function: Callable[..., t.Any], name: str) -> bool:
    """Whether `function`'s code looks up attribute `name` (a call of self.name among them).

    From the code object, not the source: an install without .py files runs as well.
    """
    return name in function.__code__.co_names


#: What the overrides above rely on: (where, what must hold, the check).
_CONTRACT: tuple[tuple[str, str, Callable[[], bool]], ...] = (
    ("Tap.sync_all", "a method taking no arguments", lambda: _parameters(Tap.sync_all) == ["self"]),
    (
        "Stream.sync",
        "calls self._sync_records(context=...)",
        lambda: _uses_name(Stream.sync, "_sync_records"),
    ),
    (
        "Stream._sync_records",
        "(self, context=None, *, write_messages=True)",
        lambda: _parameters(Stream._sync_records) == ["self", "context", "write_messages"],
    ),
    (
        "Stream.post_process",
        "a hook the record loop applies (the page path defers to it when overridden)",
        lambda: _uses_name(Stream._sync_records, "post_process"),
    ),
    (
        "Stream._generate_record_messages",
        "(self, record), yielding RECORD messages",
        lambda: _parameters(Stream._generate_record_messages) == ["self", "record"],
    ),
    (
        "Tap.state_writer.write_state",
        "a public StateWriter property",
        lambda: hasattr(getattr(Tap, "state_writer", None), "fget"),
    ),
)


def contract_problems() -> list[str]:
    """What the installed SDK lacks of what the seam relies on, one line each."""
    problems = []
    for where, expected, holds in _CONTRACT:
        try:
            ok = holds()
        except (AttributeError, TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(f"{where}: expected {expected}")
    return problems


def check_contract() -> None:
    """Fail with one line when the installed singer-sdk does not fit the seam."""
    problems = contract_problems()
    if problems:
        msg = (
            f"singer-sdk {version('singer-sdk')} does not fit tap-analytics "
            f"({'; '.join(problems)}): install a supported singer-sdk ({SUPPORTED_SDK})"
        )
        raise SDKContractError(msg)
