"""pushcore.device."""
