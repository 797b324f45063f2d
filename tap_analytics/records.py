"""Turning API records into records that match the stream's schema, a page at a time."""

from __future__ import annotations

import logging
import operator
import typing as t

from tap_analytics.errors import AnalyticsError
from tap_analytics.timestamps import rfc3339


class SchemaDriftError(AnalyticsError):
    """A non-nullable field came back null or missing while `strict` is on."""


class RecordConformer:
    """Conforms records to a stream schema without walking the schema for every record.

    The schema is read once: which top-level fields exist, which hold `date-time` values and
    which may not be null. Per record, only those few fields are touched. Fields the schema does
    not know are dropped with one warning per field and run; a null or missing non-nullable
    field is reported (or fails the run when `strict` is on).
    """

    def __init__(
        self, stream: str, schema: dict[str, t.Any], logger: logging.Logger, *, strict: bool
    ) -> None:
        properties: dict[str, dict[str, t.Any]] = schema["properties"]
        self._stream = stream
        self._logger = logger
        self._strict = strict
        self._known = frozenset(properties)
        self._timestamps = tuple(
            name for name, prop in properties.items() if prop.get("format") == "date-time"
        )
        self._required = tuple(schema.get("required", ()))
        #: The required fields' values of a record, as a tuple (itemgetter of one gives a value).
        self._required_values: t.Callable[[dict[str, t.Any]], tuple[t.Any, ...]] = (
            operator.itemgetter(*self._required, *self._required[:1])
            if self._required
            else (lambda record: ())
        )
        self._reported: set[str] = set()
        #: Drift seen this run: field name → how many records carried it (unknown) or lacked it.
        self.unknown_fields: dict[str, int] = {}
        self.null_fields: dict[str, int] = {}

    def conform(self, records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
        """Conform a page of records in place and return it."""
        # Field by field over the page rather than record by record, with C-level lookups
        # (itemgetter): this loop runs for every record the tap reads.
        known = self._known
        # One C-level pass finds whether any record carries a field the schema does not know;
        # only then are the records walked one by one.
        if not all(map(known.issuperset, records)):
            for record in records:
                if not known.issuperset(record):
                    self._drop_unknown(record)
        for name in self._timestamps:
            for record in records:
                value = record.get(name)
                # The API's own form, `…+0000`, inline: rfc3339 per value costs a call each.
                if value.__class__ is str and value[-5:] == "+0000" and len(value) > 5:
                    record[name] = value[:-2] + ":00"
                elif value is not None:
                    record[name] = rfc3339(value)
        required, values_of = self._required, self._required_values
        for record in records:
            try:
                complete = None not in values_of(record)
            except KeyError:  # a required field is missing altogether
                complete = False
            if not complete:
                for name in required:
                    if record.get(name) is None:
                        self._report_null(record, name)
        return records

    def _drop_unknown(self, record: dict[str, t.Any]) -> None:
        for name in record.keys() - self._known:
            del record[name]
            self.unknown_fields[name] = self.unknown_fields.get(name, 0) + 1
            if f"+{name}" not in self._reported:
                self._reported.add(f"+{name}")
                self._logger.warning(
                    "Schema drift in stream %s: the API sent field '%s', which the schema does "
                    "not know; dropping it from every record of this run.",
                    self._stream,
                    name,
                )

    def _report_null(self, record: dict[str, t.Any], name: str) -> None:
        self.null_fields[name] = self.null_fields.get(name, 0) + 1
        message = (
            f"Schema drift in stream {self._stream}: record id {record.get('id')!r} has no "
            f"value for non-nullable field '{name}'"
        )
        if self._strict:
            raise SchemaDriftError(f"{message}. Set strict to false to load such records.")
        if f"-{name}" not in self._reported:
            self._reported.add(f"-{name}")
            self._logger.warning("%s; loading it as null (further ones are counted).", message)
