"""Timing defaults of leader election and shutdown, importable without the ``kubernetes`` package
(the CLI shows them in ``--help``)."""

LEASE_DURATION = 15.0  # client-go's and controller-runtime's defaults
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
GRACEFUL_TIMEOUT = 10.0  # seconds the reconciles in flight get on a clean stop (SIGTERM)
