"""Sample images rendered by ``make_samples.py`` (shipped in the wheel for the exporter's model card)."""
