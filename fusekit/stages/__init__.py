"""The whole-graph stages of ``optimize`` (``fusekit.pipeline`` lists them in order).

A fusion or a canonical rule rewrites one match where the engine finds it; these stages
read and rewrite the model as a whole: ``pack`` runs the token-wise ops on a batch's
valid tokens alone.
"""
