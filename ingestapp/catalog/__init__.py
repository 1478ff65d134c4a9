"""Items after a job: the review and its exclusions (``review``), the commit into the catalog
(``commit``, and a watching session's auto-import), catalog search (``search``); ``records`` holds what they share.

Imports: ``core`` and ``store``.
"""
