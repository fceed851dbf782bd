"""gunicorn settings for the web process: `gunicorn -c python:webhooks.gunicorn_conf ...`.

Binds $PORT, runs $WEB_CONCURRENCY workers, and logs (the access log with WEB_ACCESS_LOG=1) as
JSON lines through the same formatter as the rest of the service, phone numbers masked.
"""

import os
from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, not sync workers: a sync worker is held by one client for as long as that client
# takes to send its request (gunicorn has no header-read timeout), so two slow sockets took
# the app offline. gthread gives each worker $WEB_THREADS request threads and keeps idle
# connections in its poller. A slow sender still holds a thread: production puts a
# buffering proxy in front (compose's nginx, deploy/nginx), which is the actual defence.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# Provider webhooks must be answered well inside their 15 s timeout.
timeout = 20
graceful_timeout = 10
keepalive = 5
# Requests larger than a provider callback's are refused before the app sees them.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
# The proxy in front logs each request (deploy/nginx); gunicorn's own access line cost 9 % of
# the web process's CPU under the bench's load (its format is built for every request even
# when written to /dev/null). WEB_ACCESS_LOG=1 turns it back on.
accesslog = "-" if os.environ.get("WEB_ACCESS_LOG", "").lower() in ("1", "true", "yes") else None
access_log_format = '%(m)s %(U)s %(s)s %(M)sms'


class QuietAccessLogger(Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn counts the access log as on whenever `logconfig_dict` is set (ours is, for the
    JSON error log), so it built and wrote each access line even with `accesslog` off: 6 %
    of the web process's CPU in the profile. Only `accesslog` decides here."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = QuietAccessLogger
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "shared.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["stderr"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
