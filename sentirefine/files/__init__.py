"""Files a user hands us or reads: decoding, TSV/CSV records, atomic writes, CSV-injection guard."""
