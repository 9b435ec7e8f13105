"""A small FastAPI customers service showing piiguard's masking by role."""
