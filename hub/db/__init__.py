"""The data layer: SQLAlchemy models and database set-up. Imports nothing from above it."""
