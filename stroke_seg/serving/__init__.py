"""What runs segmentations for many users and many cases on top of :func:`stroke_seg.segment`.

Lives here: ``jobs`` (the app's job engine: inputs, the slow-model lane, time-outs, streaming status), ``cache``
(results keyed by input checksums, model, weights and settings), ``auth`` and ``login`` (the optional users file,
the access gate, the audit log), ``batch`` (a folder of cases from the command line), ``cluster`` (the same on
Dask workers), ``warmup`` (a first job at start-up) and ``memory`` (the allocator settings of a serving process).
May import everything below it (``api``, ``models``, ``pipeline``, ``io``, ``report``); never ``stroke_seg.cli`` or
``app.py``. ``login`` may import Starlette, nothing here imports gradio.
"""
