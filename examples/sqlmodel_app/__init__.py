"""A FastAPI + SQLModel service whose table model holds encrypted PII."""
