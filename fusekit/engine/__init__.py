"""The compiler: the pattern language, matching, rewriting, and the stages that run rules and fusions to a fixpoint.

One module per job:

- ``pattern``: the language; a fusion, or a canonical ``Rule``, written as the math it matches.
- ``matcher``: finds one pattern variant at one anchor node, or says why not (a ``Miss``).
- ``rewrite``: replaces a match with the nodes its fusion builds and records where they came from.
- ``shapes``: the static shape facts, inferred once; shape computations they fix folded to constants; shape
  vectors read as symbolic entries, and which values keep (batch, sequence).
- ``canonicalize``: the canonicalization stage, which rewrites exporter noise into one form before any fusion looks.
- ``passes``: orders the fusions by what each runs after, and applies rules and fusions to a fixpoint.
- ``graph``: facts patterns read off a graph: constant values, attributes, ranks, producers.
- ``probe``: what a subgraph computes, found by running it: an attention mask or bias, a position term.
- ``state``: what one run shares between matches and rewrites, typed, with graph objects keyed by identity.

The fusions and rules themselves live in the pattern library, ``fusekit.patterns``.
"""
