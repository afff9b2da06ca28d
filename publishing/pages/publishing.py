"""One publishing's page, for whoever may see it: where it stands, its steps and its log, live."""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from publishing.selectors import publishings_visible_to


@login_required
def publishing_page(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    publishing = get_object_or_404(publishings_visible_to(request.user), pk=pk)
    return render(request, "publishing/pages/publishing.html", {"publishing": publishing})
