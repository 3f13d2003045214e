"""The engine: set-based execution of compiled rules on a mailbox store (ports.py is its seam)."""
