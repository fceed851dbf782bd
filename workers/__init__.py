"""Celery workers: the transfer tasks and one module per provider handoff."""
