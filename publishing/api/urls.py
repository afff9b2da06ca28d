from django.urls import path

from publishing.api import views

projects = views.ProjectViewSet.as_view({"get": "list", "post": "create"})
project = views.ProjectViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"})
publishings = views.PublishingViewSet.as_view({"get": "list"})
publishing = views.PublishingViewSet.as_view({"get": "retrieve"})
initiate = views.PublishingViewSet.as_view({"post": "initiate"})
cancel = views.PublishingViewSet.as_view({"post": "cancel"})
retry = views.PublishingViewSet.as_view({"post": "retry"})

# The API's documented paths: publishing paths without a trailing slash, project paths with one.
urlpatterns = [
    path("", views.api_root, name="api-root"),
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("health", views.HealthView.as_view(), name="health"),
    path("projects/", projects, name="project-list"),
    path("projects/<str:pk>/", project, name="project-detail"),
    path("publishing/", publishings, name="publishing-list"),
    path("publishing/initiate", initiate, name="publishing-initiate"),
    path("publishing/<str:pk>", publishing, name="publishing-detail"),
    path("publishing/<str:pk>/cancel", cancel, name="publishing-cancel"),
    path("publishing/<str:pk>/retry", retry, name="publishing-retry"),
]
