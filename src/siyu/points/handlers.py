"""Reactions of the points package to domain events, in the publisher's transaction."""
