"""The tap's command line as users meet it: --about, --discover, and wrong settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from taprun import STREAMS, run_tap, tap_config

from tap_analytics.sandbox import SandboxServer

README = Path(__file__).parents[1] / "README.md"

#: Every field of every resource, as the API reference lists it.
REFERENCE_FIELDS = {
    "users": "id username name biography website profile_picture_url account_type "
    "followers_count follows_count media_count created_at updated_at",
    "media": "id user_id media_type caption permalink media_url thumbnail_url children "
    "timestamp like_count comments_count is_comment_enabled updated_at",
    "stories": "id user_id media_type media_url permalink timestamp expires_at updated_at",
    "media_insights": "id user_id impressions reach engagement saved shares video_views plays "
    "updated_at",
    "story_insights": "id user_id impressions reach replies exits taps_forward taps_back "
    "updated_at",
    "user_insights": "id user_id date impressions reach profile_views website_clicks "
    "email_contacts follower_count updated_at",
    "user_lifetime_insights": "id user_id audience_city audience_country audience_gender_age "
    "online_followers updated_at",
}
NULLABLE = {
    "users": {"name", "biography", "website", "profile_picture_url"},
    "media": {"caption", "media_url", "thumbnail_url", "children", "like_count"},
    "stories": {"media_url"},
    "media_insights": {"shares", "video_views", "plays"},
    "story_insights": set(),
    "user_insights": {"email_contacts", "follower_count"},
    "user_lifetime_insights": {
        "audience_city",
        "audience_country",
        "audience_gender_age",
        "online_followers",
    },
}
SETTINGS = {
    "api_key",
    "api_url",
    "start_date",
    "page_size",
    "api_key_location",
    "user_ids",
    "request_timeout",
    "max_retries",
    "max_concurrency",
    "user_agent",
    "strict",
    "progress_interval",
}


def discover(tmp_path: Path) -> dict:
    run = run_tap({"api_key": "any"}, tmp_path, "--discover")
    assert run.returncode == 0, run.stderr
    return {entry["tap_stream_id"]: entry for entry in json.loads(run.stdout)["streams"]}


def test_about_lists_every_setting_with_a_description(tmp_path: Path) -> None:
    run = run_tap({"api_key": "any"}, tmp_path, "--about", "--format", "json")
    about = json.loads(run.stdout)
    settings = about["settings"]["properties"]
    assert set(settings) >= SETTINGS
    assert all(len(settings[name]["description"]) > 20 for name in SETTINGS)
    assert settings["api_key"]["secret"] is True
    assert about["settings"]["required"] == ["api_key"]
    assert {"catalog", "discover", "state", "about", "stream-maps"} <= set(about["capabilities"])


def test_discover_lists_seven_incremental_streams_matching_the_reference(tmp_path: Path) -> None:
    catalog = discover(tmp_path)
    assert set(catalog) == set(STREAMS)
    for name, entry in catalog.items():
        schema = entry["schema"]
        assert set(schema["properties"]) == set(REFERENCE_FIELDS[name].split()), name
        assert set(schema["properties"]) - set(schema["required"]) == NULLABLE[name], name
        assert entry["replication_method"] == "INCREMENTAL"
        assert entry["replication_key"] == "updated_at"
        assert entry["key_properties"] == ["id"]
        assert schema["properties"]["id"]["type"] == ["string"]
        for field in set(schema["properties"]) - NULLABLE[name]:
            assert "null" not in schema["properties"][field]["type"], (name, field)


def test_discover_types_follow_the_reference(tmp_path: Path) -> None:
    catalog = discover(tmp_path)
    media = catalog["media"]["schema"]["properties"]
    assert media["timestamp"]["format"] == "date-time"
    assert media["permalink"]["format"] == "uri"
    assert media["media_type"]["enum"] == ["IMAGE", "VIDEO", "CAROUSEL_ALBUM", "REEL"]
    assert media["children"]["items"]["type"] == ["string"]
    assert media["like_count"]["type"] == ["integer", "null"]
    assert catalog["user_insights"]["schema"]["properties"]["date"]["format"] == "date"
    breakdown = catalog["user_lifetime_insights"]["schema"]["properties"]["audience_city"]
    assert breakdown["additionalProperties"]["type"] == ["integer"]
    users = catalog["users"]["schema"]["properties"]
    assert users["account_type"]["enum"] == ["BUSINESS", "CREATOR", "PERSONAL"]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "api_key"),
        ({"api_key": "k", "page_size": 500}, "page_size"),
        ({"api_key": "k", "page_size": 0}, "page_size"),
        ({"api_key": "k", "start_date": "last tuesday"}, "start_date"),
        ({"api_key": "k", "api_url": "ftp://files.example.com"}, "api_url"),
        ({"api_key": "k", "api_key_location": "cookie"}, "api_key_location"),
        ({"api_key": "k", "user_ids": [str(n) for n in range(51)]}, "user_ids"),
        ({"api_key": "k", "user_ids": ["not-an-id"]}, "user_ids"),
    ],
)
def test_a_wrong_setting_stops_the_tap_with_a_line_naming_it(
    tmp_path: Path, settings: dict, named: str
) -> None:
    run = run_tap(settings, tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert any(named in line for line in errors), run.stderr
    assert "Traceback" not in run.stderr


#: The tap's number settings as the environment gives them: strings.
NUMBERS_FROM_ENV = {
    "TAP_ANALYTICS_RATE_LIMIT_SHARE": "0.5",
    "TAP_ANALYTICS_REQUEST_TIMEOUT": "12.5",
    "TAP_ANALYTICS_PROGRESS_INTERVAL": "0",
}


def test_number_settings_come_from_the_environment_with_config_env(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """`--config ENV` leaves numbers as strings: the tap reads them and checks their bounds."""
    run = run_tap(tap_config(sandbox), tmp_path, "--config", "ENV", env=NUMBERS_FROM_ENV)
    assert run.returncode == 0, run.stderr
    assert run.records("users")
    # progress_interval "0": a progress line for every page (two of 150 records a stream).
    progress = [line for line in run.stderr.splitlines() if "Progress users:" in line]
    assert len(progress) >= 2, run.stderr

    wrong = {**NUMBERS_FROM_ENV, "TAP_ANALYTICS_RATE_LIMIT_SHARE": "1.5"}
    refused = run_tap(tap_config(sandbox), tmp_path, "--config", "ENV", env=wrong)
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if "ERROR" in line]
    naming = [line for line in errors if "rate_limit_share" in line]
    assert len(naming) == 1, refused.stderr
    assert naming[0].endswith("rate_limit_share: 1.5 is greater than the maximum of 1")
    assert "Traceback" not in refused.stderr


def test_the_readme_documents_every_setting(tmp_path: Path) -> None:
    run = run_tap({"api_key": "any"}, tmp_path, "--about", "--format", "json")
    documented = set(re.findall(r"^\| `(\w+)` \|", README.read_text(), flags=re.MULTILINE))
    own = set(json.loads(run.stdout)["settings"]["properties"]) & SETTINGS
    assert own == SETTINGS
    assert documented >= SETTINGS
