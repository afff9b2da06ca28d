"""Checks an answer of Django's test client against the API's own OpenAPI schema.

The same validation schemathesis runs in tests/integration/test_fuzzing.py, for one chosen request:
a regression test of a contract finding names the exact case the fuzzer found.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema_rs
import requests
import schemathesis
from django.http import HttpResponse
from rest_framework.test import APIClient
from schemathesis.specs.openapi.schemas import OpenApiSchema


@functools.cache
def _schema_document() -> dict[str, Any]:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.content
    document: dict[str, Any] = response.json()
    return document


def api_schema() -> OpenApiSchema:
    """The schema that /api/schema/ serves, loaded by schemathesis."""
    return schemathesis.openapi.from_dict(_schema_document())


def assert_conforms(response: HttpResponse, method: str, path: str) -> None:
    """Fail unless `response` is documented for `method` `path` (a path template): its status and body."""
    documented = _schema_document()["paths"][path][method.lower()]["responses"]
    status = response.status_code
    assert {str(status), f"{status // 100}XX", "default"} & set(documented), (
        f"{method} {path} answered {status}, which its schema does not document: {sorted(documented)}"
    )
    request = response.wsgi_request  # type: ignore[attr-defined]
    sent = requests.Request(method.upper(), request.build_absolute_uri()).prepare()
    answer = schemathesis.Response(
        status_code=response.status_code,
        headers={name: [value] for name, value in response.items()},
        content=response.content,
        request=sent,
        elapsed=0.0,
        verify=True,
    )
    api_schema()[path][method].validate_response(answer)


def parameter_schema(method: str, path: str, name: str) -> dict[str, Any]:
    """The JSON Schema of the query parameter `name` of `method` `path`."""
    operation = _schema_document()["paths"][path][method.lower()]
    found: dict[str, Any] = next(p["schema"] for p in operation["parameters"] if p["name"] == name)
    return found


def query_value_valid(value: str, schema: dict[str, Any]) -> bool:
    """Whether a query string value is valid for a parameter `schema`, read as OpenAPI clients read it.

    On the wire every value is text: an integer parameter takes the decimal digits of one.
    """
    candidates: list[object] = [value]
    if re.fullmatch(r"-?[0-9]+", value):
        candidates.append(int(value))
    validator = jsonschema_rs.Draft4Validator(schema)
    return any(validator.is_valid(candidate) for candidate in candidates)
