"""The floor any tap must do: page every resource, decode, re-encode each record, write it.

    python benchmarks/bare_client.py sequential URL --api-key KEY --resources A,B,... > /dev/null
    python benchmarks/bare_client.py concurrent URL --api-key KEY --resources A,B,... \
        [--workers 8] > /dev/null

No Singer envelope, no schema, no state, no retries: a `requests.Session`, the stdlib `json`
module and offset/limit paging. `sequential` has one request in flight; `concurrent` reads the
first page of every resource to learn `paging.total`, then fetches the remaining offsets with a
thread pool (`--workers` requests in flight) and writes the pages in order. Each record goes to
stdout as one JSON line; the number of records is printed to stderr as `records=N`. The key
and the resources come from the benchmark (the sandbox's own, `tap_analytics.sandbox`): this
client imports nothing of the project, so that its start-up stays the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import requests

PAGE_SIZE = 100


def fetch(session: requests.Session, base: str, key: str, resource: str, offset: int) -> dict:
    response = session.get(
        f"{base}/v1/{resource}",
        params={"api_key": key, "offset": offset, "limit": PAGE_SIZE},
        timeout=30,
    )
    response.raise_for_status()
    # The stdlib decoder explicitly: response.json() would pick simplejson when installed.
    return json.loads(response.content)


def is_last(page: dict[str, Any], offset: int) -> bool:
    data, total = page["data"], page["paging"].get("total")
    return len(data) < PAGE_SIZE or (total is not None and offset + len(data) >= total)


def write_page(out: Any, page: dict[str, Any]) -> int:
    dumps = json.dumps
    for record in page["data"]:
        out.write(dumps(record))
        out.write("\n")
    return len(page["data"])


def sequential(base: str, key: str, resources: list[str], out: Any) -> int:
    session = requests.Session()
    count = 0
    for resource in resources:
        offset = 0
        while True:
            page = fetch(session, base, key, resource, offset)
            count += write_page(out, page)
            if is_last(page, offset):
                break
            offset += PAGE_SIZE
    return count


def concurrent(base: str, key: str, resources: list[str], out: Any, workers: int) -> int:
    local = threading.local()

    def get(resource: str, offset: int) -> dict:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        return fetch(session, base, key, resource, offset)

    count = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        firsts = [pool.submit(get, resource, 0) for resource in resources]
        # Every remaining page, in output order; pages are written in that order through a
        # bounded window of futures, so memory stays flat while `workers` requests are in flight.
        window: deque[Future[dict]] = deque()

        def offsets() -> Any:
            for resource, first in zip(resources, firsts, strict=True):
                page = first.result()
                yield None, page
                total = page["paging"].get("total")
                if is_last(page, 0):
                    continue
                if total is None:  # not in this benchmark; keep the client honest anyway
                    raise RuntimeError(f"{resource}: paging.total missing")
                for offset in range(PAGE_SIZE, total, PAGE_SIZE):
                    yield resource, offset

        for resource, item in offsets():
            if resource is None:  # a first page, already fetched: it takes its place in line
                done: Future[dict] = Future()
                done.set_result(item)
                window.append(done)
            else:
                window.append(pool.submit(get, resource, item))
            if len(window) >= 2 * workers:
                count += write_page(out, window.popleft().result())
        while window:
            count += write_page(out, window.popleft().result())
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["sequential", "concurrent"])
    parser.add_argument("url", help="base URL of the API, without /v1")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--resources", required=True, help="comma-separated, in output order")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    base = args.url.rstrip("/")
    resources = args.resources.split(",")
    out = sys.stdout
    if args.mode == "sequential":
        count = sequential(base, args.api_key, resources, out)
    else:
        count = concurrent(base, args.api_key, resources, out, args.workers)
    out.flush()
    sys.stderr.write(f"records={count}\n")


if __name__ == "__main__":
    main()
