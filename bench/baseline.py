"""Baselines for the benchmark: the floor of the stack, measured the same way as ours.

- `app`: a Celery app whose one task does nothing but one plain HTTP POST (the minimal
  handoff: a broker hop plus a request to the provider).
- `bare`: a Flask app whose route /bare does one Redis GET (the minimal webhook), and whose
  route /bare-enqueue publishes `bench.post` (the floor of the bridge path: a webhook that
  enqueues, a broker hop, one POST).
"""

from __future__ import annotations

import os

import redis
import requests
from celery import Celery
from flask import Flask

app = Celery("bench_baseline", broker=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                worker_prefetch_multiplier=1, task_acks_late=True,
                worker_hijack_root_logger=False)
_session = requests.Session()


@app.task(name="bench.post", ignore_result=True)  # type: ignore[untyped-decorator]
def post(url: str) -> None:
    _session.post(url, data={"hello": "world"}, timeout=5)


bare = Flask("bare")
_redis = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))


@bare.post("/bare")
def bare_route() -> tuple[str, int]:
    _redis.get("bench:key")
    return "", 204


@bare.post("/bare-enqueue")
def bare_enqueue() -> tuple[str, int]:
    from flask import request

    app.send_task("bench.post", kwargs={"url": request.form["url"]}, queue="bench")
    return "", 204
