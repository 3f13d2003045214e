"""The daemon: composition root for watchers, the scheduler, the HTTP endpoints and metrics."""
