"""The seven resources of the Analytics API v1, as the reference describes them."""

from __future__ import annotations

from singer_sdk import typing as th

from tap_analytics.client import AnalyticsStream

# Non-nullable fields are `required=True`; every other field may be null or absent.
ID = th.Property("id", th.StringType, required=True)
USER_ID = th.Property("user_id", th.StringType, required=True)
UPDATED_AT = th.Property("updated_at", th.DateTimeType, required=True)
COUNTS = th.ObjectType(additional_properties=th.IntegerType)


class UsersStream(AnalyticsStream):
    """Accounts visible to the key: GET /v1/users."""

    name = "users"
    path = "/v1/users"
    schema = th.PropertiesList(
        ID,
        th.Property("username", th.StringType, required=True),
        th.Property("name", th.StringType),
        th.Property("biography", th.StringType),
        th.Property("website", th.URIType),
        th.Property("profile_picture_url", th.URIType),
        th.Property(
            "account_type",
            th.StringType(allowed_values=["BUSINESS", "CREATOR", "PERSONAL"]),
            required=True,
        ),
        th.Property("followers_count", th.IntegerType, required=True),
        th.Property("follows_count", th.IntegerType, required=True),
        th.Property("media_count", th.IntegerType, required=True),
        th.Property("created_at", th.DateTimeType, required=True),
        UPDATED_AT,
    ).to_dict()


class MediaStream(AnalyticsStream):
    """Published posts: GET /v1/media."""

    name = "media"
    path = "/v1/media"
    schema = th.PropertiesList(
        ID,
        USER_ID,
        th.Property(
            "media_type",
            th.StringType(allowed_values=["IMAGE", "VIDEO", "CAROUSEL_ALBUM", "REEL"]),
            required=True,
        ),
        th.Property("caption", th.StringType),
        th.Property("permalink", th.URIType, required=True),
        th.Property("media_url", th.URIType),
        th.Property("thumbnail_url", th.URIType),
        th.Property("children", th.ArrayType(th.StringType)),
        th.Property("timestamp", th.DateTimeType, required=True),
        th.Property("like_count", th.IntegerType),
        th.Property("comments_count", th.IntegerType, required=True),
        th.Property("is_comment_enabled", th.BooleanType, required=True),
        UPDATED_AT,
    ).to_dict()


class StoriesStream(AnalyticsStream):
    """Stories, kept after they expire: GET /v1/stories."""

    name = "stories"
    path = "/v1/stories"
    schema = th.PropertiesList(
        ID,
        USER_ID,
        th.Property("media_type", th.StringType(allowed_values=["IMAGE", "VIDEO"]), required=True),
        th.Property("media_url", th.URIType),
        th.Property("permalink", th.URIType, required=True),
        th.Property("timestamp", th.DateTimeType, required=True),
        th.Property("expires_at", th.DateTimeType, required=True),
        UPDATED_AT,
    ).to_dict()


class MediaInsightsStream(AnalyticsStream):
    """Lifetime counters, one record per media: GET /v1/media_insights."""

    name = "media_insights"
    path = "/v1/media_insights"
    schema = th.PropertiesList(
        ID,
        USER_ID,
        th.Property("impressions", th.IntegerType, required=True),
        th.Property("reach", th.IntegerType, required=True),
        th.Property("engagement", th.IntegerType, required=True),
        th.Property("saved", th.IntegerType, required=True),
        th.Property("shares", th.IntegerType),
        th.Property("video_views", th.IntegerType),
        th.Property("plays", th.IntegerType),
        UPDATED_AT,
    ).to_dict()


class StoryInsightsStream(AnalyticsStream):
    """Lifetime counters, one record per story: GET /v1/story_insights."""

    name = "story_insights"
    path = "/v1/story_insights"
    schema = th.PropertiesList(
        ID,
        USER_ID,
        th.Property("impressions", th.IntegerType, required=True),
        th.Property("reach", th.IntegerType, required=True),
        th.Property("replies", th.IntegerType, required=True),
        th.Property("exits", th.IntegerType, required=True),
        th.Property("taps_forward", th.IntegerType, required=True),
        th.Property("taps_back", th.IntegerType, required=True),
        UPDATED_AT,
    ).to_dict()


class UserInsightsStream(AnalyticsStream):
    """Daily figures, one record per account and day: GET /v1/user_insights."""

    name = "user_insights"
    path = "/v1/user_insights"
    schema = th.PropertiesList(
        th.Property("id", th.StringType, required=True, description="<user_id>:<date>"),
        USER_ID,
        th.Property("date", th.DateType, required=True),
        th.Property("impressions", th.IntegerType, required=True),
        th.Property("reach", th.IntegerType, required=True),
        th.Property("profile_views", th.IntegerType, required=True),
        th.Property("website_clicks", th.IntegerType, required=True),
        th.Property("email_contacts", th.IntegerType),
        th.Property("follower_count", th.IntegerType),
        UPDATED_AT,
    ).to_dict()


class UserLifetimeInsightsStream(AnalyticsStream):
    """Audience breakdowns, one record per account: GET /v1/user_lifetime_insights.

    Needs the key scope `insights:lifetime`.
    """

    name = "user_lifetime_insights"
    path = "/v1/user_lifetime_insights"
    schema = th.PropertiesList(
        ID,
        USER_ID,
        th.Property("audience_city", COUNTS),
        th.Property("audience_country", COUNTS),
        th.Property("audience_gender_age", COUNTS),
        th.Property("online_followers", COUNTS),
        UPDATED_AT,
    ).to_dict()
