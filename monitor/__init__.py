"""trizmq-monitor: a live terminal dashboard of every service port in a ring."""
