"""Helpers that tests in two tiers (tests/unit, tests/e2e) share; fixtures here load as pytest plugins
(tests/conftest.py).
"""
