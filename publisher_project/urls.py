from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from publishing.api.throttling import login_throttled
from publishing.views import favicon, metrics_view

urlpatterns = [
    # The front page is the user's projects (the login page first), which link to the rest.
    path("", RedirectView.as_view(pattern_name="page-projects", permanent=False), name="home"),
    # The two login pages, throttled, ahead of the includes that also name them (their names still
    # reverse to these paths).
    path("admin/login/", login_throttled(admin.site.login)),
    path("api-auth/login/", login_throttled(LoginView.as_view(template_name="publishing/api/login.html"))),
    path("admin/", admin.site.urls),
    path("api/v1/", include("publishing.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="publishing/redoc.html"),
        name="redoc",
    ),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", metrics_view, name="metrics"),
    # Browsers ask for it on every page without an icon of its own (the admin's, the API's).
    path("favicon.ico", favicon),
    path("", include("publishing.pages.urls")),
]

handler400 = "publisher_project.exception_handler.bad_request"
handler404 = "publisher_project.exception_handler.page_not_found"
handler500 = "publisher_project.exception_handler.server_error"
