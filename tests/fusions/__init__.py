"""One-rule tests of the fusions in patterns/fusions/, one file per fusion."""
