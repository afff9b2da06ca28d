from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from publishing.views import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("publishing.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "publisher_project.exception_handler.bad_request"
handler404 = "publisher_project.exception_handler.page_not_found"
handler500 = "publisher_project.exception_handler.server_error"
