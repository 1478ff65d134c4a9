"""Items after a job: the review (exclusions), the commit into the catalog, catalog search.

Imports: ``core`` and ``store``.
"""
