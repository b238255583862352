"""Benchmarks of daemonstore on the real kernel and the model (not product code; not installed).

Run each from the repository root as a module, e.g. ``sudo .venv/bin/python -m bench.signin``;
``python -m bench.run_all`` runs them all and writes the report (each module's docstring says
what it measures).
"""
