from django.urls import path

from publishing.pages.projects import project_page, project_publish, projects_page
from publishing.pages.publishing import cancel_view, publishing_page, rerun_view, retry_view

urlpatterns = [
    path("projects/", projects_page, name="page-projects"),
    path("projects/<uuid:pk>/", project_page, name="page-project"),
    path("projects/<uuid:pk>/publish", project_publish, name="page-project-publish"),
    path("publishings/<uuid:pk>/", publishing_page, name="page-publishing"),
    path("publishings/<uuid:pk>/cancel", cancel_view, name="page-publishing-cancel"),
    path("publishings/<uuid:pk>/retry", retry_view, name="page-publishing-retry"),
    path("publishings/<uuid:pk>/rerun", rerun_view, name="page-publishing-rerun"),
]
