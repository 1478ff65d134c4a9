"""The ``flask --app ingestapp`` commands: ``ingest run|samples|watch``, ``worker`` (``commands``),
``users`` and ``tokens`` (``accounts``), and the sample media set they write (``samples``).

Imports: every part below it, like ``web``; nothing imports it but the factory.
"""
