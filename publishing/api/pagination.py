"""Page numbers as the OpenAPI schema states them."""

from __future__ import annotations

import re
from typing import Any

from django.core.paginator import Paginator
from django.utils.encoding import force_str
from rest_framework import pagination
from rest_framework.exceptions import NotFound
from rest_framework.request import Request

# A positive integer in plain decimal digits: what the schema's `minimum: 1` integer reads as in a
# query string. Django's paginator alone would also take " 1" or "+1" (int() does).
PAGE_NUMBER = re.compile(r"[1-9][0-9]*")


class PageNumberPagination(pagination.PageNumberPagination):
    """DRF's page numbers, strictly: a positive integer, `last`, or empty for the first page.

    Empty is the first page, as in DRF: `?page=` is what a form with an empty page field sends.
    Anything else is 404 NOT_FOUND "Invalid page.", as DRF answers a page past the end.
    """

    def get_page_number(self, request: Request, paginator: Paginator[Any]) -> int | str:
        value = request.query_params.get(self.page_query_param, "")
        if value == "":
            return 1
        if value in self.last_page_strings:
            return paginator.num_pages
        if not PAGE_NUMBER.fullmatch(value):
            raise NotFound(self.invalid_page_message)
        return int(value)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "A page number (1 and up), `last` for the last page, or empty for the first. "
                "Any other value, or a page past the end, is 404 NOT_FOUND.",
                "schema": {
                    "anyOf": [
                        {"type": "integer", "minimum": 1},
                        {"type": "string", "enum": ["", *map(force_str, self.last_page_strings)]},
                    ]
                },
            }
        ]
