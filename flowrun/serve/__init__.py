"""`flowrun serve`: webhooks in, durable runs, timers, actions out."""
