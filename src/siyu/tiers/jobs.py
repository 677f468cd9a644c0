"""Daily jobs of the tiers package (see ``siyu.jobs.service``)."""
