"""Reactions of the benefits package to domain events, in the publisher's transaction."""
