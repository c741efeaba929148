"""A FastAPI app with linger-sched (docs/fastapi.md), started for real by tests/acceptance/test_example_apps.py."""
