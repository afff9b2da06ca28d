from django.urls import path

from publishing.pages.projects import project_page, project_publish, projects_page
from publishing.pages.publishing import publishing_page

urlpatterns = [
    path("projects/", projects_page, name="page-projects"),
    path("projects/<uuid:pk>/", project_page, name="page-project"),
    path("projects/<uuid:pk>/publish", project_publish, name="page-project-publish"),
    path("publishings/<uuid:pk>/", publishing_page, name="page-publishing"),
]
