"""Engagement tied to the send, last-touch attribution of orders, and the figures `flowrun
report` shows. The runtime calls `tie` (flowrun.attribution.tie) at three moments: a send's
outcome settles (its provider message id is recorded), a `message.*` event arrives (matched
by message id to that send), an order arrives (attributed to the customer's last touch)."""
