"""Tests of a small shop's tasks with linger-sched's pytest plugin (see docs/testing.md)."""
