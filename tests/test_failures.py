"""Every failure the API reference warns about, against the sandbox's switches."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import threading
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import urllib3
from taprun import STREAMS, TapRun, ids, run_tap, tap_config
from typing_extensions import override

from tap_analytics import transport
from tap_analytics.errors import APIRequestError

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer

SECRET = "sk-live-7Hq2+Zx/9"  # characters that URL encoding changes


def assert_complete(run: TapRun, server: SandboxServer) -> None:
    assert run.returncode == 0, run.stderr
    snapshot = server.snapshot()
    for stream in STREAMS:
        assert ids(run.records(stream)) == ids(snapshot[stream]), stream


def error_lines(run: TapRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("tap-analytics: error:")]


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "504", "reset", "truncated", "stall"])
def test_transient_failures_are_retried_until_every_record_is_read(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path, kind: str
) -> None:
    server = start_sandbox(
        records_per_resource=120, fault_rate=0.3, faults=(kind,), stall_seconds=3
    )
    run = run_tap(tap_config(server, request_timeout=1, max_retries=10), tmp_path)
    assert_complete(run, server)
    assert server.stats()["faults"][kind] > 0
    retried = sum(sum(stream["retries"].values()) for stream in run.summary["streams"])
    # A stalled request is sent again once it is late, and its answer may never be waited for.
    assert retried + hedges(run) >= server.stats()["faults"][kind]


def hedges(run: TapRun) -> int:
    """Requests the tap sent again because they were late (what its log says)."""
    found = re.findall(r"Slow requests sent again: (\d+)", run.stderr)
    return sum(map(int, found)) + run.stderr.count("outside the page scheduler is slow")


def copies_won(run: TapRun) -> int:
    """Requests sent again whose copy answered first (what the tap's log says)."""
    return sum(map(int, re.findall(r"the copy answered first (\d+) times", run.stderr)))


def test_a_failed_request_is_sent_again_while_it_backs_off(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """One worker: while its request waits out a retry's backoff, a spare thread sends it
    again at once, and that copy's answer is used (one thread would sleep through it)."""
    server = start_sandbox(records_per_resource=120, fault_rate=0.3, faults=("500",))
    run = run_tap(tap_config(server, max_concurrency=1), tmp_path)
    assert_complete(run, server)
    assert server.stats()["faults"]["500"] > 0
    assert copies_won(run) > 0


def test_a_stalled_response_is_not_waited_for(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """Stalls far longer than the run: each stalled request is sent again, the run ends
    before any stalled answer arrives, and every record is read once."""
    server = start_sandbox(
        records_per_resource=400, fault_rate=0.05, faults=("stall",), stall_seconds=600
    )
    run = run_tap(tap_config(server, page_size=50), tmp_path)
    assert_complete(run, server)
    stats = server.stats()
    stalls = stats["faults"]["stall"]
    assert stalls > 0
    assert stats["requests"] - sum(stats["responses"].values()) == stalls  # none answered yet
    assert hedges(run) >= stalls
    assert "retrying" not in run.stderr  # no request waited for request_timeout


def test_an_api_that_keeps_failing_ends_in_one_clear_line(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=20, fault_rate=1.0, faults=("503",))
    run = run_tap(tap_config(server, max_retries=2), tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "gave up after 3 attempts" in line
    assert "HTTP 503" in line
    assert "max_retries" in line
    assert "Traceback" not in run.stderr


#: 15% faults of every kind that answers, and 15 requests allowed per 2 s.
FAULTY_AND_TIGHT: dict[str, t.Any] = {
    "records_per_resource": 300,
    "fault_rate": 0.15,
    "faults": ("429", "500", "502", "503", "504", "reset", "truncated"),
    "rate_limit": 15,
    "rate_window": 2,
}


def test_faults_and_a_tight_rate_limit_lose_nothing_and_respect_retry_after(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = start_sandbox(**FAULTY_AND_TIGHT)
    run = run_tap(tap_config(server, max_concurrency=1, max_retries=12), tmp_path)
    assert_complete(run, server)
    stats = server.stats()
    assert stats["responses"].get("429", 0) > 0
    assert stats["requests_in_retry_after_window"] == 0


def test_concurrent_workers_pace_on_the_rate_limit_headers(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """With eight workers and 10 requests a second allowed, the tap slows before a 429."""
    server = start_sandbox(records_per_resource=300, rate_limit=10, rate_window=1)
    run = run_tap(tap_config(server, max_concurrency=8), tmp_path)
    assert_complete(run, server)
    stats = server.stats()
    assert stats["rate_limited"] <= 2
    assert stats["requests_in_retry_after_window"] <= 8 * stats["rate_limited"]


def test_concurrent_workers_lose_nothing_under_faults_and_a_tight_rate_limit(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """Only requests already in flight when a 429 arrives may land inside its window."""
    server = start_sandbox(**FAULTY_AND_TIGHT)
    run = run_tap(tap_config(server, max_retries=12), tmp_path)
    assert_complete(run, server)
    stats = server.stats()
    refusals = stats["rate_limited"] + stats["faults"].get("429", 0)
    assert stats["requests_in_retry_after_window"] <= 7 * refusals


def test_a_rejected_key_stops_the_run_with_one_line(sandbox: SandboxServer, tmp_path: Path) -> None:
    run = run_tap(tap_config(sandbox, api_key="revoked-key"), tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "HTTP 401 invalid_api_key" in line
    assert "api_key setting" in line
    assert "request_id" in line
    assert "Traceback" not in run.stderr
    assert not [m for m in run.messages if m["type"] == "RECORD"]


def test_a_key_without_the_lifetime_scope_still_reads_the_other_streams(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run = run_tap(tap_config(sandbox, api_key="sandbox-key-no-lifetime"), tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "stream user_lifetime_insights: HTTP 403 insufficient_scope" in line
    assert "insights:lifetime" in line
    assert "deselect" in line
    snapshot = sandbox.snapshot()
    for stream in STREAMS[:-1]:
        assert ids(run.records(stream)) == ids(snapshot[stream]), stream
    assert "user_lifetime_insights" not in run.last_state["bookmarks"] or not run.records(
        "user_lifetime_insights"
    )


def test_a_wrong_base_url_says_to_check_api_url(sandbox: SandboxServer, tmp_path: Path) -> None:
    run = run_tap({**tap_config(sandbox), "api_url": f"{sandbox.url}/v2"}, tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "HTTP 404 not_found" in line
    assert "api_url" in line


def test_a_rejected_parameter_names_the_stream_code_and_request_id() -> None:
    response = requests.Response()
    response.status_code = 400
    response._content = (
        b'{"error":{"code":"invalid_parameter","message":"limit must be 1..100",'
        b'"request_id":"req-42"}}'
    )
    error = APIRequestError.from_response("media", response)
    assert str(error).startswith(
        "stream media: HTTP 400 invalid_parameter: limit must be 1..100 (request_id req-42)."
    )
    assert "page_size" in str(error)


@pytest.mark.parametrize(
    "scenario",
    ["rejected key", "refused connection", "resets", "timeouts", "success"],
)
def test_the_key_never_appears_in_any_output(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path, scenario: str
) -> None:
    server = start_sandbox(
        records_per_resource=20,
        api_keys={SECRET: ("read", "insights:lifetime")},
        fault_rate={"resets": 1.0, "timeouts": 1.0}.get(scenario, 0.0),
        faults={"resets": ("reset",), "timeouts": ("stall",)}.get(scenario, ("500",)),
        stall_seconds=2,
    )
    config = tap_config(server, api_key=SECRET, max_retries=1, request_timeout=0.5)
    if scenario == "rejected key":
        server.configure(api_keys={"another-key": ("read",)})
    if scenario == "refused connection":
        config["api_url"] = "http://127.0.0.1:9"
    run = run_tap(config, tmp_path, env={"LOGLEVEL": "DEBUG"})
    assert (run.returncode == 0) == (scenario == "success"), run.stderr
    output = run.stdout + run.stderr
    for form in (SECRET, requests.utils.quote(SECRET, safe=""), "7Hq2"):
        assert form not in output, scenario


# What retrying cannot fix --------------------------------------------------------------------
# Real servers on 127.0.0.1 that are not the API: a web site, a redirect, a TLS endpoint.

#: Answers a GET (the handler gives the path) with a status, headers and a body.
Reply = t.Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]

EMPTY_PAGE = (200, {"Content-Type": "application/json"}, b'{"data":[],"paging":{"total":0}}')


class Site(ThreadingHTTPServer):
    """An HTTP(S) server answering every GET with `reply`, recording what reached it.

    With `tls`, the first `broken_handshakes` connections get a plain-HTTP answer to their TLS
    hello (a TLS error that is no certificate failure) before handshakes succeed.
    """

    daemon_threads = True

    def __init__(
        self,
        reply: Reply,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        broken_handshakes: int = 0,
    ) -> None:
        super().__init__((host, 0), _SiteHandler)
        self.reply, self.tls, self.broken_handshakes = reply, tls, broken_handshakes
        self.paths: list[str] = []
        self.connections = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    @override
    def finish_request(self, request: t.Any, client_address: t.Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        with self.lock:
            self.connections += 1
            broken = self.connections <= self.broken_handshakes
        if broken:
            request.recv(4096)
            request.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            return
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused the certificate
            return
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()


class _SiteHandler(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.paths.append(self.path)
        status, headers, body = self.server.reply(self)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: t.Any) -> None:
        """Quiet: the test reads `paths` instead."""


@pytest.fixture
def start_site() -> t.Iterator[t.Callable[..., Site]]:
    """Start sites (see Site); all are stopped after the test."""
    started: list[Site] = []

    def start(reply: Reply, **options: t.Any) -> Site:
        site = Site(reply, **options)
        threading.Thread(target=site.serve_forever, daemon=True).start()
        started.append(site)
        return site

    yield start
    for site in started:
        site.shutdown()
        site.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 (its file, to trust it) and a server context."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(cert), *subject],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


def assert_stopped_at_once(run: TapRun, api_url: str, *said: str) -> None:
    """Exit 1 after one request per stream at most, with one line naming api_url and `said`."""
    assert run.returncode == 1, run.stderr
    [line] = error_lines(run)
    assert f"api_url {api_url} " in line, line
    for text in said:
        assert text in line, line
    assert "cut off" not in run.stderr
    assert "Traceback" not in run.stderr
    assert sum(sum(stream["retries"].values()) for stream in run.summary["streams"]) == 0
    output = run.stdout + run.stderr
    for form in (SECRET, requests.utils.quote(SECRET, safe=""), "7Hq2"):
        assert form not in output


def assert_each_asked_once(site: Site) -> None:
    assert site.paths, "the site got no request"
    assert len(site.paths) == len(set(site.paths)) <= len(STREAMS), site.paths


def web_page(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    page = b"<!doctype html>\n<html><head><title>Example Inc.</title></head></html>\n"
    return 200, {"Content-Type": "text/html; charset=utf-8"}, page


def other_json(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, b'{"status": "ok", "version": "2.1"}'


def json_array(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, b'[{"id": "1"}]'


def html_as_json(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, b"<html><body>Welcome</body></html>"


def redirect_loop(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    return 302, {"Location": handler.path}, b""


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (web_page, ("HTTP 200 with text/html", "<!doctype html>", "not a web site")),
        (html_as_json, ("HTTP 200 with application/json", "<html>", "not the API's JSON")),
        (other_json, ("HTTP 200 with JSON that is not the API's list response",)),
        (json_array, ("HTTP 200 with JSON that is not the API's list response",)),
        (redirect_loop, ("HTTP 302, a redirect to http://127.0.0.1:", "does not follow")),
    ],
    ids=["html page", "html labelled json", "other json", "json array", "redirect loop"],
)
@pytest.mark.parametrize("key_location", ["query", "header"])
def test_an_api_url_that_is_not_the_api_ends_the_run_at_once(
    start_site: t.Callable[..., Site],
    tmp_path: Path,
    reply: Reply,
    said: tuple[str, ...],
    key_location: str,
) -> None:
    site = start_site(reply)
    config = {"api_key": SECRET, "api_url": site.url, "api_key_location": key_location}
    run = run_tap({**config, "max_retries": 3}, tmp_path)
    assert_stopped_at_once(run, site.url, "check api_url", *said)
    assert_each_asked_once(site)


def test_a_redirect_to_another_host_is_not_followed(
    start_site: t.Callable[..., Site], tmp_path: Path
) -> None:
    elsewhere = start_site(lambda handler: EMPTY_PAGE, host="127.0.0.2")

    def moved(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        return 301, {"Location": f"{elsewhere.url}{handler.path}"}, b""

    site = start_site(moved)
    run = run_tap({"api_key": SECRET, "api_url": site.url}, tmp_path)
    assert_stopped_at_once(run, site.url, "HTTP 301", f"{elsewhere.url}/v1/", "key would go along")
    assert_each_asked_once(site)
    assert elsewhere.paths == []


def test_an_invalid_url_ends_the_run_before_any_request(tmp_path: Path) -> None:
    run = run_tap({"api_key": SECRET, "api_url": "https://api..example.com"}, tmp_path)
    assert_stopped_at_once(run, "https://api..example.com", "is not a valid URL")


def test_a_failed_certificate_check_ends_the_run_at_once(
    start_site: t.Callable[..., Site],
    tmp_path: Path,
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    site = start_site(lambda handler: EMPTY_PAGE, tls=certificate[1])
    run = run_tap({"api_key": SECRET, "api_url": site.url, "max_retries": 3}, tmp_path)
    assert_stopped_at_once(run, site.url, "TLS certificate check", "REQUESTS_CA_BUNDLE")
    assert 0 < site.connections <= len(STREAMS)
    assert site.paths == []


def test_other_tls_errors_are_retried_until_the_handshake_succeeds(
    start_site: t.Callable[..., Site],
    tmp_path: Path,
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    cert, context = certificate
    site = start_site(lambda handler: EMPTY_PAGE, tls=context, broken_handshakes=3)
    config = {"api_key": SECRET, "api_url": site.url, "max_retries": 5}
    run = run_tap(config, tmp_path, env={"REQUESTS_CA_BUNDLE": str(cert)})
    assert run.returncode == 0, run.stderr
    retries = [stream["retries"] for stream in run.summary["streams"]]
    assert sum(sum(kinds.values()) for kinds in retries) == 3, retries
    assert {path.split("?")[0] for path in site.paths} == {f"/v1/{s}" for s in STREAMS}


def test_the_certificate_check_is_told_apart_from_other_tls_errors() -> None:
    """The classifier on requests' wrapping of each (urllib3's MaxRetryError and SSLError)."""

    def wrapped(cause: ssl.SSLError) -> requests.exceptions.SSLError:
        reason = urllib3.exceptions.SSLError(cause)
        return requests.exceptions.SSLError(urllib3.exceptions.MaxRetryError(None, "/", reason))  # type: ignore[arg-type]

    failed = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failed.verify_message = "self-signed certificate"
    assert "self-signed certificate" in (transport.fatal_exception(wrapped(failed)) or "")
    assert transport.fatal_exception(wrapped(ssl.SSLEOFError(8, "EOF"))) is None
    assert transport.fatal_exception(requests.exceptions.ConnectionError("reset")) is None
    assert transport.fatal_exception(requests.exceptions.ChunkedEncodingError()) is None


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (requests.exceptions.TooManyRedirects(), "redirects in a loop"),
        (requests.exceptions.InvalidHeader(f"value '{SECRET}\\n'"), "user_agent, and api_key"),
        (requests.exceptions.MissingSchema(f"Invalid URL 'x?api_key={SECRET}'"), "has no scheme"),
    ],
)
def test_what_requests_refuses_to_send_is_not_retried_nor_echoed(
    exc: requests.RequestException, said: str
) -> None:
    """Requests' messages hold the URL (query key included) or a header's escaped value."""
    problem = transport.fatal_exception(exc) or ""
    assert said in problem
    assert "7Hq2" not in problem


@pytest.mark.parametrize(
    "api_url", ["http://api.example.com", "http://10.0.0.5:8080", "http://localhost.example.com"]
)
def test_plain_http_to_another_host_is_refused_before_any_request(
    tmp_path: Path, api_url: str
) -> None:
    run = run_tap({"api_key": SECRET, "api_url": api_url}, tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    [line] = [line for line in run.stderr.splitlines() if "ERROR" in line and "api_url" in line]
    assert "clear text" in line
    assert "allow_insecure_http" in line
    assert SECRET not in run.stderr


def test_plain_http_to_another_host_is_tried_when_allowed(tmp_path: Path) -> None:
    """With the opt-in the request is sent (and fails here: `.invalid` never resolves)."""
    config = {"api_key": SECRET, "api_url": "http://api.example.invalid", "max_retries": 0}
    run = run_tap({**config, "allow_insecure_http": True}, tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "gave up after 1 attempts" in line
    assert "api.example.invalid" in line
    assert SECRET not in run.stderr


def test_plain_http_to_localhost_needs_no_opt_in(
    start_site: t.Callable[..., Site], tmp_path: Path
) -> None:
    site = start_site(lambda handler: EMPTY_PAGE)
    api_url = site.url.replace("127.0.0.1", "localhost")
    run = run_tap({"api_key": SECRET, "api_url": api_url}, tmp_path)
    assert run.returncode == 0, run.stderr
    assert {path.split("?")[0] for path in site.paths} == {f"/v1/{s}" for s in STREAMS}
