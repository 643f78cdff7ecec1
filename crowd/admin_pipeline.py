"""The requester's view of a project's pipeline in the admin: progress and cost per stage,
worker quality with its evidence, and the review queue of outlines that ran out of retries.

``PipelineAdminMixin`` is mixed into ``CrowdStageAdmin``; its pages live under
``/admin/crowd/crowdstage/pipeline/`` and are gated like the rest of the crowd console: staff
only (``admin_view``), the crowd stage *view* permission to look, *change* to launch, catch up or
review, *add* and *change* to configure. The admin is not scoped per project (as
tests/security/test_permissions.py states for the whole console).

Every button is a POST form with a CSRF token that calls one service (``crowd.pipeline``), then
redirects with a message; provider errors become messages, never a 500. All names reach the page
through the template engine, so they are escaped.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from crowd import selectors, services
from crowd.models import CrowdStage, PipelineItem
from crowd.pipeline import engine
from crowd.pipeline.chain import CONSUMES, PRESETS, chain_of, pipeline_configure
from crowd.providers.base import ProviderError
from datasets.models import Project

PRESET_HELP = {
    "coco": "COCO's four stages: categories, spotting, segmentation, verification.",
    "classification": "Category labeling only: which categories each image shows.",
    "known-categories": "You already know the categories per image: start at instance spotting.",
    "no-verification": "Categories, spotting and segmentation; outlines are kept unverified.",
}
# Segments of a stage's progress bar, in the order they are drawn, with their colours.
BAR = [("done", "Done", "#3a7d44"), ("review", "In review", "#d98e04"), ("rejected_back", "Rejected back", "#c0392b"),
       ("in_progress", "In progress", "#2d6fb7"), ("waiting", "Waiting", "#9aa5b1")]
# Outline colours of the review queue, oldest attempt first; the latest is drawn emphasised.
OUTLINE_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]
WORKER_COLUMNS = [("worker", "worker"), ("answers", "answers"), ("approved", "approved"), ("rejected", "rejected"),
                  ("gold_seen", "gold right / seen"), ("gold_accuracy", "gold accuracy"),
                  ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("blocked", "blocked")]


class ConfigureForm(forms.Form):
    preset = forms.ChoiceField(choices=[(p, f"{p}: {PRESET_HELP[p]}") for p in PRESETS], initial="coco",
                               widget=forms.RadioSelect)
    adaptive = forms.BooleanField(
        required=False, label="Adaptive redundancy",
        help_text="Ask for another answer only while an item is uncertain; the stage's redundancy becomes a cap.")


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[("accept", "Accept"), ("reject", "Reject")])
    note = forms.CharField(max_length=300, required=False)


# --- What the pages show -------------------------------------------------------------------------

def bar_segments(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The stage's progress bar: one segment per state, its width a share of the stage's items."""
    return [{"key": key, "label": label, "colour": colour, "n": row[key],
             "width": f"{100.0 * row[key] / row['total']:.2f}" if row["total"] else "0"} for key, label, colour in BAR]


def outline_svg_points(parts: Any) -> list[str]:
    """SVG ``points`` strings of an outline's parts; only numbers get through."""
    out = []
    for part in parts if isinstance(parts, list) else []:
        try:
            xy = [float(v) for v in part]
        except (TypeError, ValueError):
            continue
        out.append(" ".join(f"{xy[i]:.1f},{xy[i + 1]:.1f}" for i in range(0, len(xy) - 1, 2)))
    return out


def review_cards(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One card per item under review: its outlines (the one under review drawn last, on top),
    each with the verification votes it got."""
    cards = []
    for entry in entries:
        item = entry["item"]
        verified = {v.polygon_id: v for v in entry["attempts"] if v.polygon_id}
        drawn = sorted(entry["outlines"], key=lambda p: (p.pk == item.polygon_id, p.pk))
        outlines = []
        for k, p in enumerate(drawn):
            v = verified.get(p.pk)
            result = (v.result or {}) if v else {}
            outlines.append({"polygon": p, "colour": OUTLINE_COLOURS[k % len(OUTLINE_COLOURS)],
                             "latest": p.pk == item.polygon_id, "parts": outline_svg_points(p.parts),
                             "attempt": v.attempt if v else None, "yes": result.get("yes"),
                             "votes": result.get("votes")})
        cards.append({"item": item, "outlines": outlines,
                      "latest": next((o for o in outlines if o["latest"]), None)})
    return cards


# --- The admin pages ------------------------------------------------------------------------------

class PipelineAdminMixin:
    """The pipeline pages of ``CrowdStageAdmin`` (see the module docstring for the gates)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _link_from_project_page(self.admin_site)

    @admin.display(description="pipeline")
    def pipeline_link(self, obj: CrowdStage) -> str:
        return format_html('<a href="{}">Pipeline of the project</a>',
                           reverse("admin:crowd_pipeline", args=[obj.project_id]))

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [
            path("pipeline/", view(self.pipeline_index_view), name="crowd_pipeline_index"),
            path("pipeline/<int:project_id>/", view(self.pipeline_view), name="crowd_pipeline"),
            path("pipeline/<int:project_id>/workers/", view(self.pipeline_workers_view),
                 name="crowd_pipeline_workers"),
            path("pipeline/<int:project_id>/review/", view(self.pipeline_review_view), name="crowd_pipeline_review"),
            path("pipeline/<int:project_id>/configure/", view(require_POST(self.pipeline_configure_view)),
                 name="crowd_pipeline_configure"),
            path("pipeline/<int:project_id>/launch/", view(require_POST(self.pipeline_launch_view)),
                 name="crowd_pipeline_launch"),
            path("pipeline/<int:project_id>/catch-up/", view(require_POST(self.pipeline_catch_up_view)),
                 name="crowd_pipeline_catch_up"),
            path("pipeline/item/<int:item_id>/resolve/", view(require_POST(self.pipeline_resolve_view)),
                 name="crowd_pipeline_resolve"),
        ]
        return own + super().get_urls()

    # --- gates and shared context ---

    def _project(self, request, project_id: int, *, change: bool = False, add: bool = False) -> Project:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if (change and not self.has_change_permission(request)) or (add and not self.has_add_permission(request)):
            raise PermissionDenied
        return get_object_or_404(Project, pk=project_id)

    def _context(self, request, project: Project, title: str, tab: str) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "title": title, "project": project, "tab": tab,
                "opts": self.model._meta, "can_change": self.has_change_permission(request),
                "can_add": self.has_add_permission(request),
                "review_count": PipelineItem.objects.filter(project=project, state=PipelineItem.State.REVIEW).count()}

    def _back(self, name: str, project_id: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse(f"admin:{name}", args=[project_id]))

    # --- pages ---

    def pipeline_index_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        projects = (Project.objects.select_related("owner").annotate(
            stages=Count("crowd_stages", distinct=True,
                         filter=Q(crowd_stages__kind__in=list(CONSUMES), crowd_stages__in_pipeline=True)),
            review=Count("pipeline_items", filter=Q(pipeline_items__state=PipelineItem.State.REVIEW), distinct=True))
            .order_by("name"))
        context = {**self.admin_site.each_context(request), "title": "Pipelines", "projects": projects,
                   "opts": self.model._meta}
        return TemplateResponse(request, "crowd/admin/pipeline_index.html", context)

    def pipeline_view(self, request, project_id: int):
        project = self._project(request, project_id)
        chain = chain_of(project.pk)
        context = self._context(request, project, f"Pipeline of {project.name}", "progress")
        if not chain:
            context.update(form=ConfigureForm(), images=project.images.count(),
                           categories=project.categories.count())
            return TemplateResponse(request, "crowd/admin/pipeline_empty.html", context)
        rows, costs = selectors.pipeline_overview(project)
        for row in rows:
            row["segments"] = bar_segments(row)
        context.update(rows=rows, money=costs, legend=BAR,
                       launched=PipelineItem.objects.filter(stage=chain[0]).exists(), entry=chain[0])
        return TemplateResponse(request, "crowd/admin/pipeline.html", context)

    def pipeline_workers_view(self, request, project_id: int):
        project = self._project(request, project_id)
        rows = selectors.pipeline_workers(project.pk)
        live = False
        entry = next((s for s in chain_of(project.pk) if s.kind == "categories"), None)
        if entry is not None and any(r["sensitivity"] is None for r in rows):
            # Not recorded with a decision (fixed redundancy with "any worker" records none):
            # Dawid-Skene over the stage's answers so far, as adaptive redundancy would use it.
            skills, _ = engine.category_skills(entry)
            for r in rows:
                if r["sensitivity"] is None and r["worker"] in skills:
                    skill = skills[r["worker"]]
                    r["sensitivity"], r["specificity"] = skill.sensitivity, skill.specificity
                    r["skill_live"] = live = True
        sort = request.GET.get("o", "worker")
        key = sort.lstrip("-")
        if key not in dict(WORKER_COLUMNS):
            sort = key = "worker"
        missing = [r for r in rows if r[key] is None]
        rows = sorted((r for r in rows if r[key] is not None), key=lambda r: r[key],
                      reverse=sort.startswith("-")) + missing
        columns = [{"key": k, "label": label, "sorted": key == k, "desc": sort == f"-{k}",
                    "next": f"-{k}" if sort == k else k} for k, label in WORKER_COLUMNS]
        context = self._context(request, project, f"Workers of {project.name}", "workers")
        context.update(rows=rows, columns=columns, live=live,
                       can_block=request.user.has_perm("crowd.change_worker"))
        return TemplateResponse(request, "crowd/admin/pipeline_workers.html", context)

    def pipeline_review_view(self, request, project_id: int):
        project = self._project(request, project_id)
        count, entries = selectors.review_queue(project.pk)
        context = self._context(request, project, f"Review queue of {project.name}", "review")
        context.update(cards=review_cards(entries), count=count, shown=len(entries))
        return TemplateResponse(request, "crowd/admin/pipeline_review.html", context)

    # --- buttons ---

    def pipeline_configure_view(self, request, project_id: int):
        project = self._project(request, project_id, change=True, add=True)
        form = ConfigureForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "Choose a preset.", messages.ERROR)
        else:
            stages = pipeline_configure(project=project, preset=form.cleaned_data["preset"],
                                        adaptive=form.cleaned_data["adaptive"])
            self.message_user(request, f"Pipeline configured: {' → '.join(s.name for s in stages)}. Change each "
                                       f"stage's numbers under Crowd stages, then launch.", messages.SUCCESS)
        return self._back("crowd_pipeline", project.pk)

    def pipeline_launch_view(self, request, project_id: int):
        project = self._project(request, project_id, change=True)
        if not chain_of(project.pk):
            self.message_user(request, "This project has no pipeline stages: configure them first.", messages.ERROR)
            return self._back("crowd_pipeline", project.pk)
        from crowd import tasks

        # Making the entry items and publishing their HITs runs in a worker, after this commits.
        tasks.pipeline_launch.delay_on_commit(project.pk)
        self.message_user(request, "Launch queued: the entry stage's items are made and put up as HITs in the "
                                   "background; reload this page to watch them.", messages.SUCCESS)
        return self._back("crowd_pipeline", project.pk)

    def pipeline_catch_up_view(self, request, project_id: int):
        project = self._project(request, project_id, change=True)
        try:
            out = engine.pipeline_catch_up(project_id=project.pk)
        except (ProviderError, services.CrowdError, ValueError) as exc:
            self.message_user(request, f"Catch-up stopped: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"Caught up: {out['finished']} items moved on, {out['published']} HITs "
                                       f"published.", messages.SUCCESS)
        return self._back("crowd_pipeline", project.pk)

    def pipeline_resolve_view(self, request, item_id: int):
        item = get_object_or_404(PipelineItem.objects.select_related("project"), pk=item_id)
        self._project(request, item.project_id, change=True)
        form = ReviewForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "Accept or reject the outline.", messages.ERROR)
            return self._back("crowd_pipeline_review", item.project_id)
        accept = form.cleaned_data["decision"] == "accept"
        before = item.state
        item = engine.review_resolve(item_id=item.pk, accept=accept, note=form.cleaned_data["note"])
        if before != PipelineItem.State.REVIEW:
            self.message_user(request, f"Item {item.pk} was no longer waiting for review; nothing changed.",
                              messages.WARNING)
        else:
            self.message_user(request, f"Item {item.pk}: outline {'accepted' if accept else 'rejected'}.",
                              messages.SUCCESS)
        return self._back("crowd_pipeline_review", item.project_id)


def _link_from_project_page(site: admin.AdminSite) -> None:
    """Add a "Pipeline" button to the Project change page (the datasets app's page stays as is:
    our template extends it)."""
    try:
        project_admin = site.get_model_admin(Project)
    except NotRegistered:
        return
    if project_admin.change_form_template is None:
        project_admin.change_form_template = "crowd/admin/project_change_form.html"
