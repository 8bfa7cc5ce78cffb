"""What fusekit tells a user about a model, read-only: ``inspect``, ``explain``, ``diff``, the INT8 analysis
and their HTML pages. ``dataflow`` is the one index over a model's protos that they all read, and ``layers``
assigns nodes to encoder layers.
"""
