"""Forward and redirect over SMTP."""
