"""Which HTTP failures retrying cannot fix, and what to tell the user to check instead."""

from __future__ import annotations

import ipaddress
import ssl
import typing as t
from urllib.parse import urljoin, urlsplit

import requests
from urllib3 import exceptions as urllib3_exceptions
from urllib3.exceptions import LocationValueError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

#: What is wrong with a URL requests refuses. Its own messages are not repeated: they hold the
#: whole URL, query key included, and a header's value in a form the redactor may not match.
_INVALID_URL: tuple[tuple[type[Exception], str], ...] = (
    (requests.exceptions.MissingSchema, "has no scheme"),
    (requests.exceptions.InvalidSchema, "has a scheme other than http or https"),
    (requests.exceptions.URLRequired, "is empty"),
    (requests.exceptions.InvalidURL, "is not a valid URL (no host, or a bad port or name)"),
    # requests lets this one through when urllib3 cannot read a host name (`a..b`).
    (LocationValueError, "is not a valid URL (a bad host name)"),
)

#: What sending a request may raise: requests' own errors, and urllib3's about a host name.
SEND_ERRORS = (requests.RequestException, LocationValueError)

#: A body that starts with anything else is not JSON cut off; JSON of another shape is told
#: apart by the decoder (not_an_envelope).
_JSON_STARTS = (b"{", b"[")


def fatal_exception(exc: Exception) -> str | None:
    """Why this exception will recur on every retry, or None if a retry may pass.

    Connection errors, timeouts, chunked and decoding errors and TLS failures other than a
    failed certificate check (a handshake cut short, a middlebox) are worth retrying.
    """
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "redirects in a loop; check api_url: it should be the API's base URL"
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return (
            "was not asked: a request header holds a line break or a leading space; check "
            "user_agent, and api_key if api_key_location is header"
        )
    for kind, problem in _INVALID_URL:
        if isinstance(exc, kind):
            return f"{problem}; check api_url: it should look like https://api.example.com"
    if isinstance(exc, requests.exceptions.SSLError) and (
        verification := _cause(exc, ssl.SSLCertVerificationError)
    ):
        reason = verification.verify_message or str(verification)
        return (
            f"failed the TLS certificate check ({reason}); check api_url's host name, or set "
            "REQUESTS_CA_BUNDLE to the CA bundle that signs its certificate (a company proxy "
            "that inspects TLS has its own)"
        )
    return None


def fatal_response(response: requests.Response) -> str | None:
    """Why this answer is not the API's and will not become it, or None if it may be.

    Every 3xx is refused: the tap asks only for paths under api_url, which the API never
    redirects, and following would send the key on (requests keeps the X-API-Key header and
    the query string across hosts). A 2xx must say JSON (its body: `not_json`).
    """
    status = response.status_code
    if 300 <= status < 400:
        location = response.headers.get("Location")
        if not location:
            return f"answered HTTP {status} without a Location; check api_url"
        target = urlsplit(urljoin(response.url or "", location))
        return (
            f"answered HTTP {status}, a redirect to {target.scheme}://{target.netloc}"
            f"{target.path}, which the tap does not follow (the API key would go along); check "
            "api_url: set it to the API's base URL"
        )
    if not 200 <= status < 300:
        return None
    media_type = _media_type(response)
    if media_type and not _is_json(media_type):
        return _web_site(status, media_type, response.content)
    return None


def not_json(response: requests.Response, body: bytes) -> str | None:
    """Why a 2xx body is not the API's JSON (an HTML page: api_url leads to a web site).

    A JSON body cut off mid-way is left to the decoder and retried.
    """
    if body.lstrip().startswith(_JSON_STARTS) or not body.strip():
        return None
    return _web_site(response.status_code, _media_type(response), body)


def read_body(response: requests.Response) -> bytes:
    """A 2xx response's whole body, decoded, read in one call; the connection is reused.

    Sent with `stream=True`: `Response.content` reads 10 kB chunks through generators, which
    cost a tenth of a fast page's CPU. Errors are raised as requests' own, as `content` does.
    """
    raw = response.raw
    try:
        return t.cast("bytes", raw.read(decode_content=True))
    except urllib3_exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3_exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except urllib3_exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from None
    except urllib3_exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    finally:
        raw.release_conn()


def _media_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _web_site(status: int, media_type: str, body: bytes) -> str:
    sample = body.lstrip()[:40].decode("utf-8", "replace").split("\n", 1)[0]
    return (
        f"answered HTTP {status} with {media_type or 'no Content-Type'} ({sample!r}…), not "
        "the API's JSON; check api_url: it should be the API's base URL, not a web site"
    )


def not_an_envelope(status: int, problem: str) -> str:
    """What to say about valid JSON that is not a list response (say `{"status": "ok"}`)."""
    return (
        f"answered HTTP {status} with JSON that is not the API's list response ({problem}); "
        "check api_url: it should be the API's base URL"
    )


def remote_plain_http_host(url: str) -> str | None:
    """The host a plain `http://` URL would send the key to in clear text, if not this machine.

    Loopback (127.0.0.0/8, ::1, localhost) is exempt: nothing crosses a network there.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [ in an IPv6 host: the request reports it
        return None
    if parts.scheme.lower() != "http" or _is_loopback(parts.hostname or ""):
        return None
    return parts.hostname or parts.netloc


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


_E = t.TypeVar("_E", bound=BaseException)


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of `kind` that `exc` wraps, through causes and urllib3's reasons."""
    for link in _links(exc):
        if isinstance(link, kind):
            return link
    return None


def _links(exc: BaseException) -> Iterator[BaseException]:
    # requests wraps urllib3's MaxRetryError (in args), which holds its SSLError (in reason),
    # which holds ssl's error (in args); causes and contexts chain them as well.
    seen: set[int] = set()
    todo = [exc]
    while todo:
        link = todo.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        nested = [link.__cause__, link.__context__, getattr(link, "reason", None), *link.args]
        todo.extend(item for item in nested if isinstance(item, BaseException))
