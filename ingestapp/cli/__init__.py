"""The ``flask --app ingestapp`` commands: ``ingest run|samples|watch``, ``worker``, and the
sample media set they write.

Imports: every part below it, like ``web``; nothing imports it but the factory.
"""
