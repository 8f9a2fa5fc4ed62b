"""memory/spatial package."""
