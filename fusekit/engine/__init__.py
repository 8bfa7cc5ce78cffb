"""The compiler: the pattern language, the matcher, the rewriter and the passes that run fusions to a fixpoint.

``pattern`` declares what a fusion looks like, ``matcher`` finds it (or says why not, as a ``Miss``),
``rewrite`` replaces it and records provenance, ``passes`` orders the fusions and runs them;
``state`` is what one run shares between them, typed, with graph objects keyed by identity.
``graph`` and ``probe`` are the facts patterns ask of a graph (constants, shapes, what a mask computes).
The fusions themselves live in the pattern library, ``fusekit.patterns``.
"""
