"""Who is calling: the API token exchange, and the authenticated user of a request."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response

from publishing.api import examples, throttling
from publishing.api.bodies import ErrorSerializer, TokenRequestSerializer, TokenSerializer
from publishing.api.openapi import ERRORS, RETRY_AFTER, UNSUPPORTED_MEDIA_TYPE
from publishing.api.parsers import JSONParser as BoundedJSONParser
from publishing.api.parsers import MultiPartParser as BoundedMultiPartParser


def caller(request: Request) -> User:
    """The authenticated user of a request that passed IsAuthenticated."""
    if not isinstance(request.user, User):
        raise exceptions.NotAuthenticated()
    return request.user


class TokenView(ObtainAuthToken):
    """Exchange a username and password for an API token (`Authorization: Token …`)."""

    # The credentials are in the body: a stale token or session must not stand in the way of a new token.
    authentication_classes: list[type[Any]] = []
    # ObtainAuthToken names DRF's own parsers; these are the API's (bounded JSON, strict multipart).
    parser_classes = [BoundedJSONParser, FormParser, BoundedMultiPartParser]

    @extend_schema(
        tags=["auth"],
        summary="Get an API token",
        request=TokenRequestSerializer,
        parameters=[RETRY_AFTER],
        responses={
            200: TokenSerializer,
            400: ERRORS[400],
            **UNSUPPORTED_MEDIA_TYPE,
            429: OpenApiResponse(
                ErrorSerializer,
                description="THROTTLED: over LOGIN_FAILURES_PER_USERNAME or LOGIN_FAILURES_PER_ADDRESS "
                "(failed logins); refused until the period ends, right password or not",
            ),
        },
        examples=examples.TOKEN,
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        attempt = throttling.login_attempt(request, throttling.login_username(request.data))
        if attempt.wait is not None:
            raise exceptions.Throttled(wait=attempt.wait, detail=throttling.TOO_MANY_LOGINS)
        response = super().post(request, *args, **kwargs)
        throttling.login_succeeded(attempt)
        return response
