"""The one router of the REST API (/api/v1/).

``POST /api/v1/forms/<slug>/submissions/`` (the public form endpoint) is routed in
``config.urls`` before this router; nothing here may shadow it.
"""

from django.urls import path
from rest_framework.routers import DefaultRouter

from leads.api.privacy import LeadRightsViewSet
from leads.api.views import FormViewSet, LeadViewSet
from nurturing.api.views import EnrollmentViewSet, SequenceViewSet
from scoring.api.views import RescoreJobViewSet, RulesetViewSet


class Router(DefaultRouter):
    """DefaultRouter plus the routes a ViewSet action cannot spell (a file extension)."""

    def get_urls(self):
        extra = [path("leads/export.csv", LeadViewSet.as_view({"get": "export"}), name="lead-export")]
        return extra + super().get_urls()


router = Router()
router.register("leads", LeadViewSet, basename="lead")
router.register("forms", FormViewSet, basename="form")
router.register("rulesets", RulesetViewSet, basename="ruleset")
router.register("rescore-jobs", RescoreJobViewSet, basename="rescorejob")
router.register("sequences", SequenceViewSet, basename="sequence")
router.register("enrollments", EnrollmentViewSet, basename="enrollment")
router.register("lead-rights", LeadRightsViewSet, basename="lead-rights")
