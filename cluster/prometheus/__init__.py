"""Prometheus configuration for Chorus: scrape config, alert rules and their unit tests.

A package only so that the files travel with an installed Chorus (`ops.prometheus` reads them).
"""
