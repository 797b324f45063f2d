"""Expected failures, reported as one line, and the redaction that keeps the API key out of them."""

from __future__ import annotations

import logging
import re
import typing as t
from urllib.parse import quote, quote_plus

from singer_sdk.exceptions import FatalAPIError

if t.TYPE_CHECKING:
    import requests

#: What to do, by status, for the errors the API reference lists as not worth retrying.
_HINTS = {
    400: "The tap sent a parameter the API rejects: check the page_size, start_date and "
    "user_ids settings.",
    401: "Check the api_key setting: the API does not accept this key.",
    403: "The key lacks the scope this stream needs: grant it (user_lifetime_insights needs "
    "insights:lifetime) or deselect the stream.",
    404: "Check the api_url setting: it should be the API's base URL, without /v1.",
}


class AnalyticsError(Exception):
    """A failure the tap expects and reports as one line, without a traceback."""


class APIRequestError(FatalAPIError, AnalyticsError):
    """The API answered with an error that retrying cannot fix."""

    def __init__(self, stream: str, status: int, code: str, message: str, request_id: str) -> None:
        self.stream = stream
        self.status = status
        self.code = code
        hint = _HINTS.get(status, "See the troubleshooting section of the README.")
        super().__init__(
            f"stream {stream}: HTTP {status} {code}: {message} (request_id {request_id}). {hint}"
        )

    @classmethod
    def from_response(cls, stream: str, response: requests.Response) -> APIRequestError:
        """Read the API's error envelope; proxies may answer with anything else."""
        try:
            error = response.json().get("error") or {}
        except ValueError:
            error = {}
        return cls(
            stream=stream,
            status=response.status_code,
            code=str(error.get("code") or response.reason or "unknown"),
            message=str(error.get("message") or "no error body"),
            request_id=str(error.get("request_id") or "n/a"),
        )


class ApiUrlError(FatalAPIError, AnalyticsError):
    """What answers at api_url is not the API, and asking again cannot change that."""

    def __init__(self, stream: str, api_url: str, problem: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream}: api_url {api_url} {problem}.")


class RetriesExhaustedError(AnalyticsError):
    """The API kept failing with transient errors until the retry budget ran out."""

    def __init__(self, stream: str, tries: int, cause: str) -> None:
        super().__init__(
            f"stream {stream}: gave up after {tries} attempts, last failure: {cause}. The API "
            "keeps failing; run again later (the run resumes from its last STATE) or raise "
            "max_retries."
        )


class Redactor(logging.Filter):
    """Replaces every known secret in text and in log records with `***`."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add_secret(self, secret: str) -> None:
        """Redact this value, raw and URL-encoded, from now on."""
        if not secret:
            return
        self._secrets |= {secret, quote(secret, safe=""), quote_plus(secret)}
        longest_first = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first)))

    def redact(self, text: str) -> str:
        """Return the text with every secret replaced."""
        return text if self._pattern is None else self._pattern.sub("***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a log record's message, arguments and traceback text in place."""
        if self._pattern is not None:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


#: One redactor for the process: secrets are added when the tap reads its config.
redactor = Redactor()
