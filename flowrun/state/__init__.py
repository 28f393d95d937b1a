"""Durable state: SQL tables (SQLite by default, PostgreSQL in production)."""
