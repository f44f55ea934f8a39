"""Detections as data, one module per family; ``registry.all_detections()`` discovers them.

Adding a family = adding one module here that defines ``DETECTIONS: tuple[Detection, ...]``.
"""
