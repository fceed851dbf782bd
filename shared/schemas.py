"""The contracts as JSON Schemas and an OpenAPI document, generated from shared.contracts.

    python3 -m shared.schemas --write   # regenerate schemas/ after changing a model
    python3 -m shared.schemas --check   # exit 1 when schemas/ differs from the models

A test runs the check, so the committed files cannot drift from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.contracts import (
    EVENT_MODELS,
    ErrorCode,
    LeadReport,
    ToolResult,
    TransferEvent,
    TransferRequestBody,
)

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Where the files are published, for their $id (relative ids resolve against it).
BASE_ID = "https://warm-transfer.invalid/schemas/"

Mode = Literal["validation", "serialization"]


def _schema(model: type[BaseModel], mode: Mode, path: str) -> dict[str, Any]:
    return {"$schema": DIALECT, "$id": BASE_ID + path,
            **model.model_json_schema(mode=mode)}


def _openapi() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(TransferRequestBody, "validation"), (ToolResult, "serialization"),
         (LeadReport, "serialization"), (TransferEvent, "serialization")],
        ref_template="#/components/schemas/{model}")

    def result(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ToolResult"}}}}

    plain = {"text/html": {"schema": {"type": "string"}}}
    unauthorized = {"description": "no or wrong bearer token", "content": plain}
    codes = ", ".join(f"`{c.value}`" for c in ErrorCode if c is not ErrorCode.SERVICE_UNAVAILABLE)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": DIALECT,
        "info": {"title": "warm-transfer", "version": "1",
                 "description": "Hand a live voice-AI call to a human agent. The outcome "
                                "arrives later as events (schemas/events/)."},
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "the API_TOKEN setting"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/transfers": {"post": {
                "operationId": "createTransfer",
                "summary": "Request a warm transfer (what the tool connect_to_live_agent does)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/TransferRequestBody"}}}},
                "responses": {
                    "202": result("transfer_requested: accepted; the events tell the outcome"),
                    "409": result("transfer_in_progress: the lead has a transfer under way "
                                  "(its transfer_id)"),
                    "422": result(f"error: refused, with a stable code ({codes}) and a "
                                  "message the AI can act on"),
                    "503": result("error `service_unavailable`: nothing was accepted; "
                                  "the AI may try again"),
                    "400": {"description": "the body is not a JSON object", "content": plain},
                    "401": unauthorized,
                },
            }},
            "/transfers/leads/{lead_id}": {"get": {
                "operationId": "getLeadTransfer",
                "summary": "The lead's transfer status, timeline and terminal event",
                "parameters": [{"name": "lead_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the lead's latest transfer", "content": {
                        "application/json": {"schema": {
                            "$ref": "#/components/schemas/LeadReport"}}}},
                    "401": unauthorized,
                    "404": {"description": "no transfer known for this lead", "content": plain},
                },
            }},
        },
    }


def generate() -> dict[str, dict[str, Any]]:
    """Every file under schemas/, by its path there, as generated from the models now."""
    files = {
        "transfer-request.json": _schema(TransferRequestBody, "validation",
                                         "transfer-request.json"),
        "tool-result.json": _schema(ToolResult, "serialization", "tool-result.json"),
        "lead-report.json": _schema(LeadReport, "serialization", "lead-report.json"),
        "openapi.json": _openapi(),
    }
    for event_type, model in EVENT_MODELS.items():
        path = f"events/{event_type.value}.json"
        files[path] = _schema(model, "serialization", path)
    return files


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def drift(root: Path = SCHEMAS_DIR) -> list[str]:
    """The files under `root` that differ from the models (missing, changed or extra)."""
    files = generate()
    out = [path for path, doc in files.items()
           if not (root / path).is_file() or (root / path).read_text() != render(doc)]
    out += [str(p.relative_to(root)) for p in sorted(root.rglob("*.json"))
            if str(p.relative_to(root)) not in files]
    return out


def write(root: Path = SCHEMAS_DIR) -> None:
    for extra in drift(root):
        if extra not in generate():
            (root / extra).unlink()
    for path, doc in generate().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(render(doc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m shared.schemas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate schemas/")
    group.add_argument("--check", action="store_true", help="fail when schemas/ has drifted")
    args = parser.parse_args(argv)
    if args.write:
        write()
        return 0
    stale = drift()
    for path in stale:
        print(f"schemas/{path} differs from the models; run python3 -m shared.schemas --write",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
