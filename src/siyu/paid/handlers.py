"""Reactions of the paid package to domain events, in the publisher's transaction."""
