"""Alert channels, the delivery outbox and the workers that drain it (see docs/alerting.md)."""
