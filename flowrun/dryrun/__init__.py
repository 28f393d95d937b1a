"""dry-run: play flows on a simulated clock; a recorder instead of channels."""
