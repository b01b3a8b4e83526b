"""Reproducible benchmarks of sentirefine: label quality vs cleanlab, speed, memory (issue 7).

Run ``python -m bench --help``; ``make bench`` runs the default set and writes BENCHMARKS.md.
"""
