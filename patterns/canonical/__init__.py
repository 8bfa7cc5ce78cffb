"""Canonicalization rules: exact rewrites of one exporter spelling into the form the fusions read."""
