"""Backbones, projection heads and the student/teacher pair."""

from patchdino.models.backbone import CUSTOM_ARCHS, Backbone, create_backbone
from patchdino.models.head import DINOHead, WeightNormLinear
from patchdino.models.student_teacher import PATCH_HEAD_MODES, Branch, StudentTeacher

__all__ = [
    "CUSTOM_ARCHS",
    "PATCH_HEAD_MODES",
    "Backbone",
    "Branch",
    "DINOHead",
    "StudentTeacher",
    "WeightNormLinear",
    "create_backbone",
]
