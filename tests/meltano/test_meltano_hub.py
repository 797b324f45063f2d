"""The Meltano Hub definition and meltano.yml agree with the tap's own `--about`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tap_analytics.tap import STREAM_NAMES

yaml = pytest.importorskip("yaml")

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_FILE = REPO_ROOT / "hub" / "extractors" / "tap-analytics" / "tap-analytics.yml"
SCRIPT = REPO_ROOT / "scripts" / "hub_definition.py"
STREAMS = set(STREAM_NAMES)
#: The Hub schema's setting kinds (schemas/common/base_setting.schema.json in the hub repo).
HUB_KINDS = {
    "oauth",
    "hidden",
    "password",
    "date_iso8601",
    "file",
    "email",
    "integer",
    "options",
    "object",
    "array",
    "boolean",
    "string",
}


def tap_about() -> dict[str, Any]:
    """The tap's --about output, from the tap installed beside this Python."""
    tap = Path(sys.executable).with_name("tap-analytics")
    if not tap.exists():
        pytest.skip("tap-analytics is not installed in this environment")
    result = subprocess.run(
        [str(tap), "--about", "--format", "json"], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout)


def test_hub_definition_is_up_to_date() -> None:
    """`scripts/hub_definition.py --check` passes: regenerate it when settings change."""
    tap_about()  # skip early if the tap is not installed
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hub_definition_fields() -> None:
    definition = yaml.safe_load(HUB_FILE.read_text())
    for field in (
        "name",
        "namespace",
        "variant",
        "label",
        "description",
        "repo",
        "docs",
        "pip_url",
        "capabilities",
        "settings",
        "settings_group_validation",
        "keywords",
        "maintenance_status",
        "quality",
    ):
        assert definition.get(field), field
    assert definition["name"] == "tap-analytics"
    assert definition["namespace"] == "tap_analytics"
    assert HUB_FILE.stem == definition["variant"]
    assert definition["maintenance_status"] in {"active", "beta", "development", "inactive"}
    assert definition["quality"] in {"gold", "silver", "bronze", "unknown"}
    settings = {s["name"]: s for s in definition["settings"]}
    assert settings["api_key"]["kind"] == "password"
    assert settings["api_key"]["sensitive"] is True
    assert ["api_key"] in definition["settings_group_validation"]
    for setting in definition["settings"]:
        assert setting["kind"] in HUB_KINDS, setting
        assert setting.get("label"), setting
        assert "description" in setting, setting


def test_meltano_yml_declares_every_setting() -> None:
    """meltano.yml's tap-analytics declares each setting of --about, and nothing else."""
    about = tap_about()
    project = yaml.safe_load((REPO_ROOT / "meltano.yml").read_text())
    (extractor,) = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-analytics"]
    declared = {s["name"]: s for s in extractor["settings"]}
    # batch_config only exists while the SDK's BATCH capability is on; meltano.yml leaves it out.
    wanted = set(about["settings"]["properties"]) - {"batch_config"}
    assert set(declared) == wanted
    for name, setting in declared.items():
        assert setting.get("kind"), name
        assert setting.get("description"), name
    assert declared["api_key"]["sensitive"] is True
    assert extractor["settings_group_validation"] == [["api_key"]]
    assert set(extractor["capabilities"]) <= set(about["capabilities"])


@pytest.mark.meltano
def test_add_from_hub_definition_and_discover(meltano: Any, tmp_path: Path) -> None:
    """A fresh Meltano project adds the plugin from the Hub file and discovers 7 streams."""
    definition = yaml.safe_load(HUB_FILE.read_text())
    # The published pip_url points at GitHub, out of reach here: install this checkout instead.
    definition["pip_url"] = f"-e {REPO_ROOT}"
    local_ref = tmp_path / "tap-analytics.yml"
    local_ref.write_text(yaml.safe_dump(definition))

    project = tmp_path / "project"
    env = {"MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}"}
    meltano.run("init", str(project), "--no-usage-stats", env=env, cwd=tmp_path)
    meltano.run(
        "add",
        "--plugin-type",
        "extractor",
        "--from-ref",
        str(local_ref),
        "tap-analytics",
        env=env,
        cwd=project,
    )
    added = yaml.safe_load((project / "meltano.yml").read_text())
    (extractor,) = added["plugins"]["extractors"]
    assert extractor["name"] == "tap-analytics"
    assert extractor["variant"] == definition["variant"]
    assert {s["name"] for s in extractor["settings"]} == {s["name"] for s in definition["settings"]}
    assert (project / ".meltano" / "extractors" / "tap-analytics" / "venv").is_dir()

    result = meltano.run(
        "invoke",
        "tap-analytics",
        "--discover",
        env={**env, "TAP_ANALYTICS_API_KEY": "not-needed-for-discovery"},
        cwd=project,
    )
    catalog = json.loads(result.stdout)
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    assert set(streams) == STREAMS
    for name, stream in streams.items():
        assert stream["key_properties"] == ["id"], name
        assert stream["replication_key"] == "updated_at", name
        assert stream["replication_method"] == "INCREMENTAL", name
