"""What a person reads about a result: the clinical description of any lesion mask and its pictures.

Lives here: ``render`` (key slices with the lesion outlined, for the viewer and the page). May import
``stroke_seg.pipeline``, ``stroke_seg.io``, ``stroke_seg.types`` and ``stroke_seg.errors``; never ``models``,
``api``, ``serving`` or a UI toolkit.
"""
