"""The soak run's parts; `scripts/soak.py` is its command."""
