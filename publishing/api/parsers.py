"""Request body parsers: DRF's, with bounds on what a body may be."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from django.utils.http import parse_header_parameters
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


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, refusing a body that holds no named part but is not an empty form either.

    Django's parser skips a part without a name, so a body that is no form at all (a JSON `false`
    wrapped in a boundary, say) would parse as an empty one, and a PATCH would change nothing and
    answer 200. It is a 400, as a JSON body that is no object is. An empty form (no body, or the
    closing delimiter alone, as requests and urllib3 encode `{}`) parses to no fields.
    """

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> parsers.DataAndFiles[Any, Any]:
        recorded = _Recorded(stream)
        parsed = super().parse(recorded, media_type, parser_context)  # type: ignore[arg-type]
        if not parsed.data and not parsed.files and not _is_empty_form(recorded, media_type or ""):
            raise ParseError("Multipart form parse error - the body holds no named part.")
        return parsed


class _Recorded:
    """A body stream that keeps the start of what is read from it, and counts the rest."""

    KEEP = 1024

    def __init__(self, stream: IO[bytes] | None) -> None:
        self.stream = stream
        self.start = b""
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size) if self.stream is not None else b""
        if len(self.start) < self.KEEP:
            self.start += chunk[: self.KEEP - len(self.start)]
        self.size += len(chunk)
        return chunk


def _is_empty_form(body: _Recorded, media_type: str) -> bool:
    """Whether a multipart body is empty or the closing delimiter alone (with line breaks around it)."""
    if body.size > body.KEEP:
        return False
    boundary = parse_header_parameters(media_type)[1].get("boundary", "")
    return (
        not body.start.strip()
        or re.fullmatch(rb"\s*--" + re.escape(boundary.encode("latin-1")) + rb"--\s*", body.start) is not None
    )
