"""Data loading for violet: the clip store reader, frame sampling, tokenization and task datasets."""
