"""Field values of the synthetic records, with every quirk the API reference warns about.

Records are never stored. A record is its identity fields (id, owner, links: cheap, computed
from the slot) around a *body*: one of a pool of field sets generated per resource from the
seed at startup, picked by (slot, version). A new version picks another body, so an updated
record gets new field values; serving costs a few microseconds per record.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from tap_analytics.sandbox.config import LIFETIME_SCOPE

Record = dict[str, Any]

DAY = 86_400
FIRST_UPDATE = 1_740_787_200  # 2025-03-01T00:00:00Z: initial updated_at values start here.
BODIES_PER_VARIANT = 512
_EPOCH = date(1970, 1, 1)
_CLOCK = tuple(f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+0000" for s in range(86_400))
_CREATED_START, _CREATED_SPAN = 1_420_070_400, 9 * 365 * DAY  # accounts: 2015-2023
_PUBLISHED_START, _PUBLISHED_SPAN = FIRST_UPDATE - 400 * DAY, 399 * DAY  # before any update
_STORY_START, _STORY_SPAN = FIRST_UPDATE - 60 * DAY, 59 * DAY
_FIRST_INSIGHT_DAY = (date(2024, 11, 1) - _EPOCH).days
_HUGE = 3_000_000_000  # above 2**31: clients must not squeeze counters into int32
_SLOT_DIGITS = 8
_SLOT_FORMAT = f"%0{_SLOT_DIGITS}d"
_GOLDEN = 2_654_435_761  # Knuth's multiplicative hash constant

ACCOUNT, MEDIA, STORY, CHILD = 1, 2, 3, 4  # id kinds: the first digit of the id
ACCOUNT_TYPES = ("BUSINESS", "CREATOR", "PERSONAL")
MEDIA_TYPES = ("IMAGE", "VIDEO", "CAROUSEL_ALBUM", "REEL")
VIDEO_TYPES = frozenset({"VIDEO", "REEL"})
STORY_TYPES = ("IMAGE", "VIDEO")

TEXTS = (
    "Sunset over the bay 🌅 #travel #nofilter",
    "New drop!\nLink in bio 👆",
    "She said \"yes\" 💍 and we said 'finally'",
    "東京の夜景がきれい ✨",
    "Привет из Москвы! Снег уже выпал ❄️",
    "مرحبا بالعالم 🌍",
    "Line one\nLine two\n\nLine four\r\nwith CRLF",
    "Tabs\tand a backslash \\ and a slash / in one",
    "😀😃😄😁🎉🔥",
    "Ünïcödé çåptîøn — dashes… ellipsis",
    "",
    "Family 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵🏳️‍🌈",
    "हिन्दी में कैप्शन 🙏",
    "Plain caption about coffee",
    "Long caption. " + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12,
    "<b>not html</b> & {not: json} [1, 2]",
)
NAMES = ("Café Zoë", "Müller & Söhne", "東京カフェ", "O'Brien Studio", "Ana María", "Ωmega Labs")
HANDLES = ("cafe_zoe", "mueller.soehne", "tokyo.cafe", "obrien_studio", "ana.maria", "omega")
CITIES = (
    "London, England",
    "São Paulo, São Paulo (state)",
    "Tōkyō, Tokyo",
    "New York, New York",
    "Zürich, Zurich",
    "Mumbai, Maharashtra",
    "Paris, Île-de-France",
    "Москва, Moscow",
    "Lagos, Lagos",
    "Seoul, Seoul",
)
COUNTRIES = ("US", "GB", "BR", "JP", "DE", "IN", "FR", "NG", "KR", "CH", "MX", "ID")
GENDER_AGE = tuple(
    f"{gender}.{ages}"
    for gender in "FMU"
    for ages in ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
)


@lru_cache(maxsize=8192)
def format_date(day: int) -> str:
    """Return day (days since 1970-01-01) as YYYY-MM-DD."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def format_timestamp(epoch: int) -> str:
    """Return epoch seconds in the API's form `2026-11-01T08:15:30+0000` (two lookups: fast)."""
    day, second = divmod(epoch, DAY)
    return format_date(day) + _CLOCK[second]


class Ids:
    """Ids of 17-20 digits derived from (seed, kind, slot), so they need no storage.

    An id is its kind digit, a per-seed filler and the slot on 8 digits, so ids of one kind are
    unique and the slot can be read back from an account id.
    """

    def __init__(self, seed: int, accounts: int) -> None:
        rng = random.Random(f"{seed}:ids")
        self._salt = rng.getrandbits(32)
        self._prefixes = {}
        for kind in (ACCOUNT, MEDIA, STORY, CHILD):
            filler = str(rng.randrange(10**10, 10**11))
            shortest = 16 if kind == CHILD else 17  # a child's id gets one more digit
            self._prefixes[kind] = tuple(
                f"{kind}{filler[: width - 1 - _SLOT_DIGITS]}"
                for width in range(shortest, shortest + 4)
            )
        self.accounts = accounts

    def spread(self, slot: int) -> int:
        """Return a well-scattered 20-bit hash of slot."""
        return (((slot ^ self._salt) * _GOLDEN) >> 12) & 0xFFFFF

    def make(self, kind: int, slot: int) -> str:
        """Return the id of slot among the ids of kind."""
        return self._prefixes[kind][self.spread(slot) & 3] + _SLOT_FORMAT % slot

    def children(self, slot: int, count: int) -> list[str]:
        """Return the ids of the (up to 8) children of the carousel in slot."""
        base = self.make(CHILD, slot)
        return [base + digit for digit in "01234567"[:count]]

    def account_slot(self, account_id: str) -> int | None:
        """Return the slot of an account id, or None when no account can have this id."""
        if not account_id.isascii() or not account_id.isdigit() or len(account_id) < 17:
            return None
        slot = int(account_id[-_SLOT_DIGITS:])
        return slot if self.make(ACCOUNT, slot) == account_id else None

    def owner(self, slot: int) -> int:
        """Return the account slot owning the media, story or daily insight in slot."""
        return slot % self.accounts

    def media_type(self, slot: int) -> str:
        """Return the media type of a media slot (shared by the media and its insights)."""
        return MEDIA_TYPES[(self.spread(slot) >> 4) % len(MEDIA_TYPES)]

    def story_type(self, slot: int) -> str:
        """Return the media type of a story slot."""
        return STORY_TYPES[(self.spread(slot) >> 4) % len(STORY_TYPES)]

    def instant(self, slot: int, start: int, span: int) -> int:
        """Return a fixed instant of slot in [start, start + span), e.g. its creation time."""
        return start + (self.spread(slot) * 7_919 + slot) % span

    def insight_day(self, slot: int) -> int:
        """Return the day (since 1970) of a daily user insight: ids `<user>:<date>` stay unique."""
        return _FIRST_INSIGHT_DAY + self.owner(slot) % 60 + slot // self.accounts


# --- bodies: generated once per (seed, resource), rich in quirks --------------------------------


def _nullable(body: Record, rng: random.Random, name: str, value: object) -> None:
    """Set a nullable field: 10 % absent, 10 % null, else value."""
    roll = rng.random()
    if roll >= 0.1:
        body[name] = None if roll < 0.2 else value


def _counter(rng: random.Random, high: int, huge_chance: float = 0.0) -> int:
    """Return a counter below high, or above 2**31 with probability huge_chance."""
    return rng.randrange(high) + (_HUGE if rng.random() < huge_chance else 0)


def _breakdown(rng: random.Random, keys: Sequence[str], high: int) -> dict[str, int]:
    """Return a few distinct keys mapped to counters."""
    return {key: _counter(rng, high) for key in rng.sample(keys, rng.randint(2, len(keys)))}


def _cdn_url(rng: random.Random, folder: str, extension: str) -> str:
    return f"https://cdn.example.com/{folder}/{rng.getrandbits(64):016x}.{extension}"


def _extras(body: Record, rng: random.Random) -> None:
    """Add fields the reference does not list (clients must ignore them) to a few bodies."""
    roll = rng.random()
    if roll < 0.05:
        body["ig_new_metric"] = rng.randrange(100)
    elif roll < 0.08:
        body["ig_experiment"] = {"variant": rng.choice("ab"), "scores": [1, 2.5], "on": True}


def _user_body(rng: random.Random, variant: str) -> Record:
    body: Record = {"username": rng.choice(HANDLES)}
    _nullable(body, rng, "name", rng.choice(NAMES))
    _nullable(body, rng, "biography", rng.choice(TEXTS))
    _nullable(body, rng, "website", f"https://www.example.com/{body['username']}")
    _nullable(body, rng, "profile_picture_url", _cdn_url(rng, "profiles", "jpg"))
    body["account_type"] = rng.choice(ACCOUNT_TYPES)
    body["followers_count"] = _counter(rng, 2_000_000, huge_chance=0.03)
    body["follows_count"] = _counter(rng, 7_500)
    body["media_count"] = _counter(rng, 5_000)
    return body


def _media_body(rng: random.Random, media_type: str) -> Record:
    body: Record = {"media_type": media_type}
    _nullable(body, rng, "caption", rng.choice(TEXTS))
    video = media_type in VIDEO_TYPES
    _nullable(body, rng, "media_url", _cdn_url(rng, "media", "mp4" if video else "jpg"))
    if video:
        _nullable(body, rng, "thumbnail_url", _cdn_url(rng, "thumbnails", "jpg"))
    if media_type == "CAROUSEL_ALBUM":  # a template: the record gets its own children's ids
        _nullable(body, rng, "children", [""] * rng.randint(2, 8))
    _nullable(body, rng, "like_count", _counter(rng, 80_000))
    body["comments_count"] = _counter(rng, 3_000)
    body["is_comment_enabled"] = rng.random() < 0.9
    return body


def _story_body(rng: random.Random, media_type: str) -> Record:
    body: Record = {"media_type": media_type}
    extension = "mp4" if media_type == "VIDEO" else "jpg"
    _nullable(body, rng, "media_url", _cdn_url(rng, "stories", extension))
    return body


def _media_insight_body(rng: random.Random, media_type: str) -> Record:
    impressions = _counter(rng, 3_000_000, huge_chance=0.04)
    body: Record = {"impressions": impressions, "reach": impressions * rng.randint(30, 90) // 100}
    body["engagement"] = _counter(rng, 90_000)
    body["saved"] = _counter(rng, 4_000)
    _nullable(body, rng, "shares", _counter(rng, 2_000))
    if media_type in VIDEO_TYPES:
        _nullable(body, rng, "video_views", _counter(rng, 1_000_000))
    if media_type == "REEL":
        _nullable(body, rng, "plays", _counter(rng, 5_000_000, huge_chance=0.02))
    return body


def _story_insight_body(rng: random.Random, variant: str) -> Record:
    impressions = _counter(rng, 200_000)
    body: Record = {"impressions": impressions, "reach": impressions * rng.randint(50, 99) // 100}
    for name in ("replies", "exits", "taps_forward", "taps_back"):
        body[name] = _counter(rng, 5_000)
    return body


def _user_insight_body(rng: random.Random, variant: str) -> Record:
    body: Record = {
        "impressions": _counter(rng, 500_000, huge_chance=0.03),
        "reach": _counter(rng, 300_000),
        "profile_views": _counter(rng, 20_000),
        "website_clicks": _counter(rng, 2_000),
    }
    _nullable(body, rng, "email_contacts", _counter(rng, 300))
    _nullable(body, rng, "follower_count", _counter(rng, 2_000_000))
    return body


def _lifetime_insight_body(rng: random.Random, variant: str) -> Record:
    body: Record = {}
    _nullable(body, rng, "audience_city", _breakdown(rng, CITIES, 40_000))
    _nullable(body, rng, "audience_country", _breakdown(rng, COUNTRIES, 90_000))
    _nullable(body, rng, "audience_gender_age", _breakdown(rng, GENDER_AGE, 60_000))
    online = {str(hour): _counter(rng, 30_000) for hour in range(24)}
    _nullable(body, rng, "online_followers", online)
    return body


def make_bodies(spec: ResourceSpec, seed: int) -> dict[str, list[Record]]:
    """Return the pool of bodies of a resource, per variant (media type or "")."""
    rng = random.Random(f"{seed}:{spec.name}:bodies")
    pools: dict[str, list[Record]] = {}
    for variant in spec.variants:
        pools[variant] = []
        for _ in range(BODIES_PER_VARIANT):
            body = spec.make_body(rng, variant)
            _extras(body, rng)
            pools[variant].append(body)
    return pools


# --- records: identity fields (and times that never change) around a body --------------------


def _user(ids: Ids, slot: int, rid: str, body: Record, updated_at: str) -> Record:
    created_at = format_timestamp(ids.instant(slot, _CREATED_START, _CREATED_SPAN))
    record = {"id": rid, **body, "created_at": created_at, "updated_at": updated_at}
    record["username"] = f"{body['username']}.{slot}"  # usernames are unique
    return record


def _media(ids: Ids, slot: int, rid: str, body: Record, updated_at: str) -> Record:
    user_id = ids.make(ACCOUNT, ids.owner(slot))
    permalink = f"https://www.example.com/p/{rid}/"
    published = format_timestamp(ids.instant(slot, _PUBLISHED_START, _PUBLISHED_SPAN))
    record = {
        "id": rid,
        "user_id": user_id,
        "permalink": permalink,
        "timestamp": published,
        **body,
        "updated_at": updated_at,
    }
    children = body.get("children")
    if children:
        record["children"] = ids.children(slot, len(children))
    return record


def _story(ids: Ids, slot: int, rid: str, body: Record, updated_at: str) -> Record:
    user_id = ids.make(ACCOUNT, ids.owner(slot))
    permalink = f"https://www.example.com/stories/{rid}/"
    published = ids.instant(slot, _STORY_START, _STORY_SPAN)
    return {
        "id": rid,
        "user_id": user_id,
        "permalink": permalink,
        **body,
        "timestamp": format_timestamp(published),
        "expires_at": format_timestamp(published + DAY),
        "updated_at": updated_at,
    }


def _owned(ids: Ids, slot: int, rid: str, body: Record, updated_at: str) -> Record:
    user_id = ids.make(ACCOUNT, ids.owner(slot))
    return {"id": rid, "user_id": user_id, **body, "updated_at": updated_at}


def _user_insight(ids: Ids, slot: int, rid: str, body: Record, updated_at: str) -> Record:
    user_id, day = rid.split(":")
    return {"id": rid, "user_id": user_id, "date": day, **body, "updated_at": updated_at}


def _lifetime_insight(ids: Ids, slot: int, rid: str, body: Record, updated_at: str) -> Record:
    return {"id": rid, "user_id": rid, **body, "updated_at": updated_at}


def _kind_id(kind: int) -> Callable[[Ids, int], str]:
    """Return the id maker of records whose id is the plain id of their slot in kind."""
    return lambda ids, slot: ids.make(kind, slot)


# One maker per kind, shared by the resources with the same ids (the dataset builds each once).
_ACCOUNT_ID, _MEDIA_ID, _STORY_ID = _kind_id(ACCOUNT), _kind_id(MEDIA), _kind_id(STORY)


def _daily_insight_id(ids: Ids, slot: int) -> str:
    return f"{ids.make(ACCOUNT, ids.owner(slot))}:{format_date(ids.insight_day(slot))}"


def _media_variant(ids: Ids, slot: int) -> str:
    return ids.media_type(slot)


def _story_variant(ids: Ids, slot: int) -> str:
    return ids.story_type(slot)


def _no_variant(ids: Ids, slot: int) -> str:
    return ""


@dataclass(frozen=True)
class ResourceSpec:
    """What the server needs to know about one resource."""

    name: str
    make_body: Callable[[random.Random, str], Record]  # a body for a variant
    assemble: Callable[[Ids, int, str, Record, str], Record]  # (ids, slot, id, body, updated_at)
    make_id: Callable[[Ids, int], str]
    per_account: bool  # one record per account slot (owner = slot), else owner = slot % accounts
    # Which pool of bodies a slot draws from: fields that must not change with updates.
    variant: Callable[[Ids, int], str] = _no_variant
    variants: tuple[str, ...] = ("",)
    companion_of: str | None = None  # inserted and deleted together with that resource
    scope: str | None = None  # scope the API key needs


SPECS = (
    ResourceSpec("users", _user_body, _user, _ACCOUNT_ID, per_account=True),
    ResourceSpec(
        "media",
        _media_body,
        _media,
        _MEDIA_ID,
        per_account=False,
        variant=_media_variant,
        variants=MEDIA_TYPES,
    ),
    ResourceSpec(
        "stories",
        _story_body,
        _story,
        _STORY_ID,
        per_account=False,
        variant=_story_variant,
        variants=STORY_TYPES,
    ),
    ResourceSpec(
        "media_insights",
        _media_insight_body,
        _owned,
        _MEDIA_ID,
        per_account=False,
        variant=_media_variant,
        variants=MEDIA_TYPES,
        companion_of="media",
    ),
    ResourceSpec(
        "story_insights",
        _story_insight_body,
        _owned,
        _STORY_ID,
        per_account=False,
        companion_of="stories",
    ),
    ResourceSpec("user_insights", _user_insight_body, _user_insight, _daily_insight_id, False),
    ResourceSpec(
        "user_lifetime_insights",
        _lifetime_insight_body,
        _lifetime_insight,
        _ACCOUNT_ID,
        per_account=True,
        companion_of="users",
        scope=LIFETIME_SCOPE,
    ),
)
RESOURCES = {spec.name: spec for spec in SPECS}
