"""Coupons, benefit packs and the points mall."""
