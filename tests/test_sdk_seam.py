"""The seam to singer-sdk: private names only in tap_analytics/sdk.py, and a contract that says
in one line when an installed SDK no longer fits it."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import types
import typing as t
from pathlib import Path

import pytest
import singer_sdk
from singer_sdk import Stream, Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter

from tap_analytics import sdk
from tap_analytics.client import AnalyticsStream
from tap_analytics.tap import TapAnalytics

PACKAGE = Path(sdk.__file__).parent
SEAM = Path(sdk.__file__)


@functools.cache
def sdk_private_names(cls: type) -> set[str]:
    """Private names (`_x`, not dunders) of the SDK classes `cls` builds on.

    Class members, and the instance attributes their methods set on `self` (`_tap`).
    """
    names: set[str] = set()
    for base in cls.__mro__:
        if base.__module__.startswith("singer_sdk"):
            names |= set(vars(base))
            for node in ast.walk(ast.parse(inspect.getsource(base).lstrip())):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    names.add(node.attr) if node.value.id == "self" else None
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def sdk_final_names(cls: type) -> set[str]:
    """Methods the SDK marks `@final` on the classes `cls` builds on."""
    return {
        name
        for base in cls.__mro__
        if base.__module__.startswith("singer_sdk")
        for name, member in vars(base).items()
        if getattr(member, "__final__", False)
    }


#: What a class member that overrides a method can be.
METHODS = (types.FunctionType, property, functools.cached_property, staticmethod, classmethod)
SDK_BASES = (TapAnalytics, AnalyticsStream, MsgSpecWriter)
SDK_PRIVATE = set().union(*map(sdk_private_names, SDK_BASES))


def own_names(tree: ast.AST) -> set[str]:
    """Names a module defines itself: methods, and attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def private_uses(source: str, where: str, defined: set[str]) -> list[str]:
    """Imports of private SDK modules, and uses of private SDK names not `defined` here."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
            if any(part.startswith("_") for part in (node.module or "").split(".")):
                found.append(f"{where}:{node.lineno} imports {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in SDK_PRIVATE - defined:
            found.append(f"{where}:{node.lineno} uses .{node.attr}")
    return found


def sdk_overrides(module: types.ModuleType) -> list[str]:
    """Private or final SDK methods that a class of `module` overrides."""
    found = []
    for cls in vars(module).values():
        if not (isinstance(cls, type) and cls.__module__ == module.__name__):
            continue
        guarded = sdk_private_names(cls) | sdk_final_names(cls)
        for name, member in vars(cls).items():
            if name in guarded and isinstance(member, METHODS):
                found.append(f"{module.__name__}.{cls.__name__} overrides {name}")
    return found


def package_modules() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py")) if path != SEAM]


def test_no_private_sdk_name_is_used_outside_the_seam() -> None:
    assert {"_sync_records", "_tap", "_write_state_message"} <= SDK_PRIVATE
    trees = {path: ast.parse(path.read_text()) for path in package_modules()}
    defined = set().union(*map(own_names, trees.values()))
    found = [
        use
        for path in trees
        for use in private_uses(path.read_text(), str(path.relative_to(PACKAGE.parent)), defined)
    ]
    assert found == []


def test_no_private_or_final_sdk_method_is_overridden_outside_the_seam() -> None:
    modules = [
        importlib.import_module(
            ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
                ".__init__"
            )
        )
        for path in package_modules()
        if path.name != "__main__.py"
    ]
    assert [found for module in modules for found in sdk_overrides(module)] == []
    assert sdk_overrides(sdk) == [
        "tap_analytics.sdk.SeamTap overrides sync_all",
        "tap_analytics.sdk.SeamStream overrides _sync_records",
    ]


def test_the_scan_finds_each_kind_of_private_use() -> None:
    source = "from singer_sdk.helpers._util import utc_now\nstream._tap.state_writer\n"
    assert private_uses(source, "x.py", defined=set()) == [
        "x.py:1 imports singer_sdk.helpers._util",
        "x.py:2 uses ._tap",
    ]


def test_the_installed_sdk_fits_the_seam() -> None:
    assert sdk.contract_problems() == []
    sdk.check_contract()


def test_a_missing_guarded_name_fails_with_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Stream, "_sync_records")
    with pytest.raises(sdk.SDKContractError) as failure:
        sdk.check_contract()
    message = str(failure.value)
    assert "\n" not in message
    assert "Stream._sync_records" in message
    assert singer_sdk.__name__.replace("_", "-") in message
    assert sdk.SUPPORTED_SDK in message


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def sync_all(self: Tap, selected: t.Any) -> None: ...

    monkeypatch.setattr(Tap, "sync_all", sync_all)
    assert sdk.contract_problems() == ["Tap.sync_all: expected a method taking no arguments"]


def test_a_final_method_that_no_longer_calls_the_override_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sync(self: Stream, context: t.Any = None) -> None:
        self.write_schema_message()

    monkeypatch.setattr(Stream, "sync", sync)
    expected = "Stream.sync: expected calls self._sync_records(context=...)"
    assert sdk.contract_problems() == [expected]


def test_the_seam_overrides_what_the_sdk_calls() -> None:
    # The page path only runs if the SDK still calls these from its final methods.
    assert "self._sync_records(" in inspect.getsource(Stream.sync)
    assert TapAnalytics.sync_all is sdk.SeamTap.sync_all
