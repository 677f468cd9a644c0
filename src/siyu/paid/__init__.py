"""Paid membership (付费会员): plans, subscriptions, renewals, refunds."""
