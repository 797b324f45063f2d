"""Singer messages on stdout: encoded with msgspec, and whole pages of RECORDs in one write.

A page's RECORD messages are encoded by msgspec in one call (`encode_lines`), and STATE without
the SDK's `to_dict`, which deep-copies the whole state into a new dict before encoding it:
together most of what the tap spends per message.
"""

from __future__ import annotations

import sys
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, enc_hook
from singer_sdk.singerlib import StateMessage
from typing_extensions import override

from tap_analytics import timestamps

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message


class PageWriter(MsgSpecWriter):
    """The SDK's msgspec writer, plus `write_records` for a page of records at once."""

    _encoder = msgspec.json.Encoder()
    #: The SDK's settings for other messages (datetimes, decimals as numbers).
    _encode_message = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number").encode

    #: Bytes written so far, and the size of the last STATE message (to pace STATE by).
    bytes_written = 0
    state_bytes = 0

    @override
    def write_message(self, message: Message) -> None:
        if isinstance(message, StateMessage):
            line = self._encode_message({"type": "STATE", "value": message.value}) + b"\n"
            self.state_bytes = len(line)
            self._write_bytes(line)
        else:
            self._write_bytes(bytes(self.format_message(message)))

    def write_records(
        self, stream: str, records: list[dict[str, t.Any]], *, version: int | None = None
    ) -> None:
        """Write one RECORD message per record (of table `version`, if any) in one write.

        The records are encoded in one call and each line wrapped in the message's other
        fields, which are the same for the whole page: the bytes of a RECORD message with the
        SDK's field order (type, stream, record, time_extracted, version if any), without
        building a message object per record.
        """
        if not records:
            return
        encode = self._encoder.encode
        head = b'{"type":"RECORD","stream":' + encode(stream) + b',"record":'
        tail = b',"time_extracted":' + encode(timestamps.now().isoformat())
        if version is not None:
            tail += b',"version":' + encode(version)
        tail += b"}"
        # A JSON line holds no newline of its own (msgspec escapes those in strings): the
        # newlines are the record boundaries.
        lines = self._encoder.encode_lines(records)
        self._write_bytes(head + lines[:-1].replace(b"\n", tail + b"\n" + head) + tail + b"\n")

    def _write_bytes(self, data: bytes) -> None:
        self.bytes_written += len(data)
        stdout = sys.stdout
        if hasattr(stdout, "buffer"):
            stdout.buffer.write(data)
        else:  # a text stream without a byte layer, as test harnesses capture stdout
            stdout.write(data.decode())
        stdout.flush()
