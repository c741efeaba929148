"""A Flask app with linger-sched (docs/flask.md), started for real by tests/acceptance/test_example_apps.py."""
