"""One-rule tests of the canonicalization rules, one file per module of patterns/canonical/."""
