"""Input and output: everything that turns a user's files into a validated :class:`stroke_seg.types.Case` and back.

Lives here: the image readers behind one interface (``readers``: NIfTI, and the registry a new format joins),
``case`` (``load_case``: inputs by role -> one validated ``Case`` on the DWI grid; ``save_image``), DICOM in (series
selection, dcm2niix, b-values) and DICOM SEG out (``dicom``), the limits on input sizes checked before anything is read
or unpacked (``limits``), and file checksums (``digest``). May import only ``stroke_seg.types``, ``stroke_seg.errors``
and ``stroke_seg.version``; nothing here knows about models, the pipeline, serving or any UI. Add a reader here.
"""
