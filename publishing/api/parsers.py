"""Request body parsers: DRF's, with bounds on what a body may be."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Deeper than any request of this API needs; a JSON nested past Python's recursion limit would
# otherwise raise RecursionError (a 500) in the decoder or in the code that walks it.
MAX_DEPTH = 64


class JSONParser(parsers.JSONParser):
    """JSON nested at most MAX_DEPTH levels; deeper is a 400."""

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        # The body's size is bounded before this (Django's DATA_UPLOAD_MAX_MEMORY_SIZE, a 400).
        raw = stream.read() if stream is not None else b""
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(raw.decode(encoding), parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if _depth_over(data, MAX_DEPTH):
            raise ParseError(f"JSON parse error - the body is nested more than {MAX_DEPTH} levels.")
        return data


def _refuse_constant(name: str) -> None:
    # NaN and Infinity are not JSON (DRF's own parser refuses them too, in strict mode).
    raise ValueError(f"{name} is not valid JSON")


def _depth_over(data: Any, limit: int) -> bool:
    """Whether `data` nests lists and objects more than `limit` levels (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
