"""The corpus: the SQLite store, importing users' files into it, the workspace and its lock."""
