"""Benchmarks of durable side by side with DBOS: ``python -m benchmarks --help``.

Every measurement runs in a fresh subprocess against a fresh database, durable and DBOS
alternately, and the parent reports medians over the repetitions (see ``docs/benchmarks.md``).
"""
