"""Data: token windows, corpora to token files, documents, instruction records."""
