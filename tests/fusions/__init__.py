"""Each fusion of patterns/fusions/ applied alone to its own small graphs, one test file per module."""
