"""Daily jobs of the points package (see ``siyu.jobs.service``)."""
