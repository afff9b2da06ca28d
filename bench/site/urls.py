from django.urls import path

from bench.site import views
from publisher_project.urls import handler404, handler500, urlpatterns

urlpatterns = [*urlpatterns, path("bench/insert", views.InsertOnlyView.as_view(), name="bench-insert")]

__all__ = ["handler404", "handler500", "urlpatterns"]
