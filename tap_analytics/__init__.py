"""tap-analytics: a Singer tap for the Analytics API v1."""
