"""What fusekit tells a user about a model, read-only. One module per report, and what they share:

- ``inspection``: ``fusekit inspect``, what a model is.
- ``explain``: ``fusekit explain``, every place a fusion could apply, whether it fused, and why not.
- ``diff``: ``fusekit diff``, what became of every node of the original.
- ``int8``: ``fusekit explain --int8``, which MatMul/Gemm runs in INT8 on each runtime; ``int8_rules``
  holds what each runtime does, as one rule table per runtime citing its sources.
- ``htmlreport``: the ``--html`` page of each command.
- ``dataflow``: the one index over a model's protos that they all read; ``layers`` assigns nodes to
  encoder layers.
"""
