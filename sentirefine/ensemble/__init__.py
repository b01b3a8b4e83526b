"""Combining the members: Pool prediction, weights, confidence, out-of-fold (cross-fit) predictions."""
