"""Makes the shared test-data writers in this folder (``idx_files``) importable by every test."""
