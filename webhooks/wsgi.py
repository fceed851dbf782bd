"""WSGI entry point: `gunicorn webhooks.wsgi:app`."""

from shared.config import get_settings
from shared.logs import configure_logging
from webhooks import create_app

configure_logging(get_settings().log_level)
app = create_app()
