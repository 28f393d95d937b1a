"""Segments: files in the flows repository (segments/*.yaml), their rules, and membership."""
