"""Integrations with web frameworks, each an optional extra: ``contrib.flask`` (``pip install
linger-sched[flask]``), ``contrib.asgi`` (FastAPI, Starlette: ``linger-sched[fastapi]``) and
``contrib.django``. They are front ends over :class:`linger_sched.Linger`; nothing in the core
imports them."""
