"""Reports people read: the demo's report folder (``demo``); the engine's memory reports live beside
the engine (``mcutrain.engine.reports``) and are reused here."""
