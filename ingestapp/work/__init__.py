"""Where a file's stages run: the stage-process pool of a web server or worker (``pool``, its
processes shared round robin by session: ``fairshare``), the scale-out work tier's Celery tasks
(``tasks``) and the job's side of it (``remote``), all speaking one file protocol (``protocol``:
the task, each stage's report, the result).

Imports: ``core`` and ``stages``. It has no database and no events: results go back to the job,
which records them.
"""
