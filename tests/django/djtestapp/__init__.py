"""The Django app of tests/django: a model to write next to a job, and tasks.py."""
