"""Fusions: the form the canonical rules leave, replaced by the fused op each target runs best."""
