"""Files: atomic writes and one safe, versioned tensor container used by every artifact."""
