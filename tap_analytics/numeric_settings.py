"""Number settings that also take the number written as a string, as the environment gives it.

Meltano 4.4.1 turns a `kind: decimal` setting from the environment into a `Decimal` it then
cannot write to the tap's JSON config, and the SDK's `--config ENV` coerces integers and
booleans but leaves a `number` as the string it read. So the tap's fractional settings are
`kind: string` in Meltano and the Hub, and accept a number or a numeric string; `float()` reads
either where the tap uses the setting.
"""

from __future__ import annotations

import math
import typing as t

from jsonschema import Draft202012Validator
from singer_sdk import typing as th


def number_or_string(number: th.NumberType) -> th.CustomType:
    """`number` (with its bounds), or a string holding such a number."""
    schema = number.to_dict()
    schema["type"] = [*schema["type"], "string"]
    return th.CustomType(schema)


def accepts_numeric_string(schema: t.Mapping[str, t.Any]) -> bool:
    """Whether a setting's schema is one `number_or_string` made."""
    types = schema.get("type", ())
    return "number" in types and "string" in types


def string_errors(config: t.Mapping[str, t.Any], config_schema: t.Mapping[str, t.Any]) -> list[str]:
    """One line per number setting given as a string that is not a number within its bounds.

    JSON schema applies `minimum` and the like to numbers only: the SDK's validation checks a
    number, this checks a string, read as the number, against the same schema and in its words.
    """
    errors = []
    for name, schema in config_schema.get("properties", {}).items():
        value = config.get(name)
        if not isinstance(value, str) or not accepts_numeric_string(schema):
            continue
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            errors.append(f"{name}: {value!r} is not a number; write it like 0.5 or 30")
            continue
        errors.extend(
            f"{name}: {error.message}" for error in Draft202012Validator(schema).iter_errors(number)
        )
    return errors
