"""pushcore.admin.api."""
