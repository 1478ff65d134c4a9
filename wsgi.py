"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

A database that is not at the current schema revision stops the worker from booting (gunicorn
then exits), with the command to run in the message (``ingestapp.store.revision``).
"""

from ingestapp import create_app
from ingestapp.store.revision import require_current

app = create_app()
require_current(app)
