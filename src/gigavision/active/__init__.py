"""Experts in the loop: selection strategies, review queues, multi-annotator quality control.

Modules load on demand (``from gigavision.active import quality``); nothing heavy is imported here.
"""
