"""pushcore.sim."""
