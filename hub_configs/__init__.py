"""Per-family Hub templates and the exporter that writes a Hub-ready folder."""
