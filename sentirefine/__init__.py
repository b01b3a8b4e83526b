"""sentirefine: progressive self-training that cleans sentiment labels and retrains the models."""

__version__ = "0.1.0"
