"""Customer memory: one profile per customer key, the order history, and segments over them."""
