"""gunicorn settings for the web process: `gunicorn -c python:webhooks.gunicorn_conf ...`.

Binds $PORT, runs $WEB_CONCURRENCY workers, and logs (access log included) as JSON lines
through the same formatter as the rest of the service, phone numbers masked.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Provider webhooks must be answered well inside their 15 s timeout.
timeout = 20
graceful_timeout = 10
accesslog = "-"
access_log_format = '%(m)s %(U)s %(s)s %(M)sms'
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
