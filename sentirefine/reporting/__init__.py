"""What a person reads: the HTML report, the per-iteration audit, the console tables."""
