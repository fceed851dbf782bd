"""The deployment files: who is published, what the proxy enforces, Flower's lock."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "default.conf.template"


def _compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return services


def test_only_the_proxy_is_published_and_everything_restarts() -> None:
    services = _compose()
    published = {name for name, s in services.items() if s.get("ports")
                 and "monitor" not in s.get("profiles", [])}
    assert published == {"proxy"}
    assert "ports" not in services["web"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name


def test_the_proxy_runs_the_repos_template_in_front_of_web() -> None:
    proxy = _compose()["proxy"]
    [mount] = proxy["volumes"]
    source, target, mode = mount.split(":")
    assert (ROOT / source).resolve() == TEMPLATE
    assert target == "/etc/nginx/templates/default.conf.template" and mode == "ro"
    assert proxy["environment"]["WEB_UPSTREAM"] == "web:8000"
    # Every ${NAME} the template uses is given (the image substitutes only those).
    assert set(re.findall(r"\$\{(\w+)\}", TEMPLATE.read_text())) == set(proxy["environment"])


def test_the_proxy_times_out_slow_clients_and_buffers() -> None:
    conf = TEMPLATE.read_text()
    for directive in ("client_header_timeout 5s;", "client_body_timeout 5s;",
                      "send_timeout 10s;", "proxy_request_buffering on;",
                      "client_max_body_size 64k;", "limit_conn warm_transfer_per_ip"):
        assert directive in conf, directive
    assert re.search(r"location = /metrics \{\s*return 404;", conf)


def test_flower_is_opt_in_local_and_password_protected() -> None:
    flower = _compose()["flower"]
    assert flower["profiles"] == ["monitor"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    command = flower["command"][2]
    assert 'test -n "$$FLOWER_BASIC_AUTH" ||' in command
    assert '--basic-auth="$$FLOWER_BASIC_AUTH"' in command


def test_gunicorn_uses_threads() -> None:
    import webhooks.gunicorn_conf as conf

    assert conf.worker_class == "gthread" and conf.threads >= 4
