"""Delivery policies shared by whoever performs actions (serve's dispatcher)."""
