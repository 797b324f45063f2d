"""Run the sandbox in its own process: `python -m tap_analytics.sandbox --port 0 ...`.

It prints its base URL as the first line on stdout, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import fields

from tap_analytics.sandbox.config import FULL_SCOPES, SandboxConfig
from tap_analytics.sandbox.server import SandboxServer

# Annotation (as a string, see `from __future__ import annotations`) -> argument parser.
_PARSERS: dict[str, Callable[[str], object]] = {
    "int": int,
    "int | None": int,
    "float": float,
    "str": str,
    "tuple[str, ...]": str,  # comma-separated; SandboxConfig splits it
}


def _api_key(text: str) -> tuple[str, tuple[str, ...]]:
    """Parse `KEY` (every scope) or `KEY=SCOPE,SCOPE` (those scopes, possibly none)."""
    key, has_scopes, scopes = text.partition("=")
    if not has_scopes:
        return key, FULL_SCOPES
    return key, tuple(scope for scope in scopes.split(",") if scope)


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser: one flag per SandboxConfig field, defaults left to the dataclass."""
    parser = argparse.ArgumentParser(
        prog="python -m tap_analytics.sandbox",
        description=__doc__.splitlines()[0],
        argument_default=argparse.SUPPRESS,  # absent flags keep SandboxConfig's defaults
    )
    for spec in fields(SandboxConfig):
        flag, help_text = "--" + spec.name.replace("_", "-"), spec.metadata["help"]
        if spec.name == "api_keys":
            parser.add_argument(
                "--api-key",
                dest="api_keys",
                action="append",
                type=_api_key,
                metavar="KEY[=SCOPES]",
                help=help_text,
            )
        elif spec.type == "bool":
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, type=_PARSERS[str(spec.type)], help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status (0)."""
    parser = build_parser()
    options = vars(parser.parse_args(argv))
    if "api_keys" in options:
        options["api_keys"] = dict(options["api_keys"])
    try:
        config = SandboxConfig(**options)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with SandboxServer(config) as sandbox:
        print(sandbox.url, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
