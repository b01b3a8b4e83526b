"""Combining the members: the typed ensemble (spec.py), its maths (combine.py), the prediction
pool (pool.py), out-of-fold predictions and their merge (crossfit.py), gold metrics (metrics.py)."""
