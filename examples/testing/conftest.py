from examples.testing.tasks import app
from linger_sched.testing import for_app

linger_app = for_app(app)  # every test: this app on tables of its own, on the linger_clock fake clock
