"""The coding worklist: notes queued in a database, claimed and decided by coders, measured, exported."""
