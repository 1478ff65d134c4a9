"""The test suite. Every process it starts (gunicorn, ``flask`` commands, work-tier workers) inherits
this environment: passwords are hashed with argon2-cffi's test profile (``accounts/users.py``:
``PASSWORD_PROFILE``), so the suite's hundreds of sign-ins cost no measurable CPU; the production
default's parameters are checked in ``test_auth.py``."""

import os

os.environ.setdefault("INGEST_PASSWORD_PROFILE", "CHEAPEST")
