"""What a page's button does: one service call as the user, and a message saying how it went.

Buttons that queue a build (publish, retry, re-run) draw on the API's start budget
(PUBLISHING_INITIATE_RATE per user): a page is no way around it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from publishing.api.throttling import PublishingStartThrottle
from publishing.exceptions import BrokerUnavailable, PublishingConflict, PublishingError
from publishing.models import Publishing


def page_user(request: HttpRequest) -> User:
    """The signed-in user a page's write is made as (the views are behind login_required)."""
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


def act(
    request: HttpRequest,
    service: Callable[[User], Publishing],
    *,
    done: str,
    starts_a_build: bool,
) -> Publishing | None:
    """Call `service` as the user; say `done` (with the publishing's status) or why not. None when refused."""
    if starts_a_build:
        throttle = PublishingStartThrottle()
        if not throttle.allow_request(request, None):  # type: ignore[arg-type]
            wait = throttle.wait()
            later = f" in {int(wait) + 1} s" if wait else " later"
            messages.error(request, f"Too many publishings started: try again{later}.")
            return None
    try:
        publishing = service(page_user(request))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PublishingConflict as exc:
        if exc.active_id is None:
            messages.warning(request, exc.detail)
        else:
            active = reverse("page-publishing", args=[exc.active_id])
            messages.warning(
                request, format_html('{} <a href="{}">See the active one.</a>', exc.detail, active)
            )
    except BrokerUnavailable as exc:
        messages.error(request, f"{exc.detail}: nothing was changed; try again in a moment.")
    except PublishingError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"{done}: now {publishing.status}.")
        return publishing
    return None
