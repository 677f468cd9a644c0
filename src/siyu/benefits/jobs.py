"""Daily jobs of the benefits package (see ``siyu.jobs.service``)."""
