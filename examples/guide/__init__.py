"""The examples of the how-to guides (docs/tasks.md, docs/schedules.md, docs/nodes.md), shown
there verbatim and run by tests/unit/test_guide_examples.py."""
