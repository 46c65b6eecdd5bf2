"""Metrics, health endpoints and logging setup."""
