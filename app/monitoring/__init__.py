"""Monitoring engine: check runners, the state machine, the collector, statistics and retention."""
