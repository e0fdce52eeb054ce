"""Annotation formats: COCO, Pascal VOC, YOLO, QuPath GeoJSON, ImageFolder, CSV (import and export)."""
