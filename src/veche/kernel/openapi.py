"""The OpenAPI document: every error documented as problem+json with the `Problem` schema."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from veche.kernel.errors import PROBLEM_MEDIA_TYPE, FieldError, Problem

_REF_TEMPLATE = "#/components/schemas/{model}"


def _is_error(status: str) -> bool:
    return status == "default" or (status.isdigit() and int(status) >= 400)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, FieldError):
        model_schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if _is_error(status) and PROBLEM_MEDIA_TYPE in content:
                    # FastAPI adds an empty application/json twin to extra responses.
                    content.pop("application/json", None)
    app.openapi_schema = schema
    return schema
