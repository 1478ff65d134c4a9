"""Who may do what: users and API tokens (``users``), sign-in, credentials, CSRF and
ownership (``auth``), and the hardened surface — trusted hosts, headers, cookies (``security``).

Imports: ``core`` and ``store``.
"""
