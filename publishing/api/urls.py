from django.urls import path

from publishing.api.auth import TokenView
from publishing.api.logs import LOG_RENDERERS
from publishing.api.projects import ProjectViewSet
from publishing.api.publishings import PublishingViewSet
from publishing.api.root import ApiRootView, HealthView

projects = ProjectViewSet.as_view({"get": "list", "post": "create"})
project = ProjectViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"})
publishings = PublishingViewSet.as_view({"get": "list"})
publishing = PublishingViewSet.as_view({"get": "retrieve"})
initiate = PublishingViewSet.as_view({"post": "initiate"})
cancel = PublishingViewSet.as_view({"post": "cancel"})
retry = PublishingViewSet.as_view({"post": "retry"})
rerun = PublishingViewSet.as_view({"post": "rerun"})
log = PublishingViewSet.as_view({"get": "log"}, renderer_classes=LOG_RENDERERS)

# The API's documented paths: publishing paths without a trailing slash, project paths with one.
urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("auth/token/", TokenView.as_view(), name="token"),
    path("health", HealthView.as_view(), name="health"),
    path("projects/", projects, name="project-list"),
    path("projects/<str:pk>/", project, name="project-detail"),
    path("publishing/", publishings, name="publishing-list"),
    path("publishing/initiate", initiate, name="publishing-initiate"),
    path("publishing/<str:pk>", publishing, name="publishing-detail"),
    path("publishing/<str:pk>/cancel", cancel, name="publishing-cancel"),
    path("publishing/<str:pk>/retry", retry, name="publishing-retry"),
    path("publishing/<str:pk>/rerun", rerun, name="publishing-rerun"),
    path("publishing/<str:pk>/log", log, name="publishing-log"),
]
