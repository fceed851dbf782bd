"""The webhook app: provider callbacks, the producer endpoint, health."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, Response, request

from shared.config import Settings, get_settings
from shared.logs import get_logger
from webhooks.deps import Deps, deps, release_claim
from webhooks.parsing import BoundedJSONProvider

log = get_logger("webhooks")


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """App factory. `config` is a Settings object, or a mapping of settings overrides;
    None reads the environment."""
    if config is None:
        settings = get_settings()
    elif isinstance(config, Settings):
        settings = config
    else:
        settings = get_settings().model_copy(update=dict(config))
    import providers
    from providers.accounts import provider_settings

    for spec in providers.specs():
        # Each provider's own settings, checked now: a bad one is a startup error.
        if spec.account.settings_model is not None:
            provider_settings(settings, spec.name, spec.account.settings_model)
    app = Flask(__name__)
    app.json = BoundedJSONProvider(app)
    # Provider callbacks are small forms; anything larger is refused with 413.
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.extensions["warm_transfer"] = Deps.build(settings)

    from webhooks.console import bp as console_bp
    from webhooks.health import bp as health_bp
    from webhooks.transfers import bp as transfers_bp

    @app.after_request
    def _count(response: Response) -> Response:
        # Not the scrape, nor the console's pages and polling: they are not webhooks.
        if request.url_rule is not None and request.url_rule.rule != "/metrics" \
                and not request.url_rule.rule.startswith("/console"):
            deps().metrics.inc("warm_transfer_webhook_requests", route=request.url_rule.rule,
                               status=str(response.status_code))
        return response

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError) -> Response:
        # 503, so that the provider retries: nothing was accepted.
        log.warning("redis unavailable", extra={"path": request.path, "error": str(exc)})
        release_claim()
        return Response("service unavailable\n", status=503, mimetype="text/plain")

    app.register_blueprint(health_bp)
    app.register_blueprint(transfers_bp)
    for spec in providers.specs():
        # Each provider's routes live in its package (a blueprint `bp` at /<name>).
        app.register_blueprint(importlib.import_module(spec.routes).bp)
    app.register_blueprint(console_bp)  # 404 unless CONSOLE_TOKEN is set
    return app
