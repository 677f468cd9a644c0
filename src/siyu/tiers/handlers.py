"""Reactions of the tiers package to domain events, in the publisher's transaction."""
