"""Generated data with known ground truth: synthetic heads and strokes, their scanner exports, and training.

Lives here: the generator (``generator``: the head from the MNI template, ``lesions``: infarct and mimic shapes,
``artefacts``: noise, bias fields and the skull-base susceptibility zone), ``dicom_export`` (a generated case written
as a scanner's DICOM series) and ``train`` (training the ``unet`` backend on generated and real cases). The
generators may import ``stroke_seg.io`` and ``stroke_seg.pipeline.anatomy`` only; ``train`` sits above
``stroke_seg.models`` and ``stroke_seg.api``. Run ``python -m stroke_seg.synthetic OUTDIR`` to write cases.
"""
