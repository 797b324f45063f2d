"""Singer messages on stdout: encoded with msgspec, and whole pages of RECORDs in one write."""

from __future__ import annotations

import sys
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter
from typing_extensions import override

from tap_analytics import timestamps

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message


class PageWriter(MsgSpecWriter):
    """The SDK's msgspec writer, plus `write_records` for a page of records at once."""

    _encode = msgspec.json.Encoder().encode

    @override
    def write_message(self, message: Message) -> None:
        self._write_bytes(bytes(self.format_message(message)))

    def write_records(self, stream: str, records: list[dict[str, t.Any]]) -> None:
        """Write one RECORD message per record with a single write and flush."""
        head = b'{"type":"RECORD","stream":' + self._encode(stream) + b',"record":'
        tail = b',"time_extracted":' + self._encode(timestamps.now().isoformat()) + b"}\n"
        encode = self._encode
        self._write_bytes(
            b"".join([part for record in records for part in (head, encode(record), tail)])
        )

    @staticmethod
    def _write_bytes(data: bytes) -> None:
        stdout = sys.stdout
        if hasattr(stdout, "buffer"):
            stdout.buffer.write(data)
        else:  # a text stream without a byte layer, as test harnesses capture stdout
            stdout.write(data.decode())
        stdout.flush()
