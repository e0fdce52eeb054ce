"""Evaluation metrics (classification, detection, segmentation, embeddings) and HTML reports, torch-free.

Detection follows the COCO protocol and matches ``pycocotools`` to 1e-6 (DESIGN.md §6); classification uses
scikit-learn. Every result is a frozen dataclass with ``to_dict()`` giving plain JSON.
"""

from __future__ import annotations

from gigavision.metrics.classification import (
    ClassificationResult,
    MultiLabelResult,
    evaluate_classification,
    evaluate_multilabel,
    operating_point,
    tune_thresholds,
)
from gigavision.metrics.detection import COCO_AREA_RANGES, DetectionResult, evaluate_detection, to_coco
from gigavision.metrics.embedding import RetrievalResult, VerificationResult, recall_at_k, verification_roc
from gigavision.metrics.report import render_report, write_report
from gigavision.metrics.segmentation import SegmentationMeter, SegmentationResult, evaluate_segmentation

__all__ = [
    "COCO_AREA_RANGES",
    "ClassificationResult",
    "DetectionResult",
    "MultiLabelResult",
    "RetrievalResult",
    "SegmentationMeter",
    "SegmentationResult",
    "VerificationResult",
    "evaluate_classification",
    "evaluate_detection",
    "evaluate_multilabel",
    "evaluate_segmentation",
    "operating_point",
    "recall_at_k",
    "render_report",
    "to_coco",
    "tune_thresholds",
    "verification_roc",
    "write_report",
]
