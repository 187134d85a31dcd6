"""Herald's rules, one place each: what creating, changing, publishing and recovering mean.

The API's routes parse, authorize, call one of these functions and answer; the worker calls the same
rules (disabling a failing subscription, publishing operational events). Nothing here knows HTTP:
a broken rule raises a ``herald.errors`` error, which ``herald.api.errors`` maps to a status.
"""
