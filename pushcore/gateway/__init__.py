"""pushcore.gateway."""
