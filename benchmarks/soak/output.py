"""The tap's stdout in a soak run, reduced as it streams to what the completeness check needs."""

from __future__ import annotations

import typing as t
from collections import Counter
from dataclasses import dataclass, field

import msgspec


class _Record(msgspec.Struct):
    """The two fields of a record the check needs; msgspec skips the others unparsed."""

    id: t.Any = None
    updated_at: t.Any = None


class _Message(msgspec.Struct):
    """A Singer message, decoded only as far as the check needs."""

    type: str
    stream: str | None = None
    record: _Record | None = None
    value: t.Any = None


_decode = msgspec.json.Decoder(_Message).decode


@dataclass
class Output:
    """What one tap run printed: `id -> updated_at` per stream (never the records), counts."""

    records: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    states: int = 0
    last_state: dict[str, t.Any] | None = None
    bad_lines: int = 0
    first_bad_line: str = ""
    #: stream -> id -> updated_at of the last RECORD with that id (this run only).
    seen: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    def read(self, stream: t.IO[bytes]) -> None:
        """Consume the tap's stdout line by line, keeping ids and updated_at per stream."""
        strings: dict[str, str] = {}  # updated_at values repeat (ties): keep one copy of each
        intern = strings.setdefault
        for line in stream:
            try:
                message = _decode(line)
            except msgspec.DecodeError:
                self.bad_lines += 1
                self.first_bad_line = self.first_bad_line or line[:200].decode(errors="replace")
                continue
            kind = message.type
            if kind == "RECORD" and message.record is not None and message.stream is not None:
                name = message.stream
                seen = self.seen.get(name)
                if seen is None:
                    seen = self.seen[name] = {}
                record_id = message.record.id
                updated_at = message.record.updated_at
                if record_id in seen:
                    self.duplicates[name] += 1
                seen[record_id] = intern(updated_at, updated_at) if updated_at else updated_at
                self.records[name] += 1
            elif kind == "STATE":
                self.states += 1
                self.last_state = message.value
