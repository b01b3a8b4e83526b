"""The outside systems: MLflow tracking and serving, DVC versioning, the LLM, human review."""
