"""The pure image steps around a model: numpy in, numpy out, no files, no servers.

Lives here: ``preprocess`` (canonical orientation, resampling, brain extraction, normalisation), ``postprocess`` (the
lesion rules a mask obeys: thresholds, minimum sizes, rims and edges, the physics guard), ``metrics`` (volume, lesion
table, comparison with a reference), ``qc`` (warnings when a result looks implausible) and ``anatomy`` (the
MNI-space brain model those steps share). May import ``stroke_seg.io``, ``stroke_seg.types`` and
``stroke_seg.errors``; never ``models``, ``api``, ``serving`` or a UI toolkit. Add a QC rule in ``qc``, a
post-processing rule in ``postprocess``.
"""
