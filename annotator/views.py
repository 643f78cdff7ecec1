from django.shortcuts import render


def home(request):
    """The landing page: where to go for each role."""
    from datasets.selectors import project_summaries

    return render(request, "annotator/home.html", {"projects": project_summaries(user=request.user)})
