"""Retention: the policy, and the prune that applies it (docs/FORMAT.md "Retention")."""
