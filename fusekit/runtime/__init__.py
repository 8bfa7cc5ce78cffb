"""Running models: the backend registry (``backends``), one thin adapter per runtime (``ort``, ``openvino``),
``run`` for one inference and ``bench`` for timing. No fusion logic lives here.
"""
