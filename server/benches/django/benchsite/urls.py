from django.contrib.sites.models import Site
from django.shortcuts import render
from django.urls import include, path


def post(request):
    """A page with the comment form for the site object, as a blog post would have."""
    return render(request, "post.html", {"target": Site.objects.get_current()})


urlpatterns = [
    path("post/", post),
    path("comments/", include("django_comments.urls")),
]
