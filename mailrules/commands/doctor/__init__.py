"""`mailrules doctor`: network, IMAP and SMTP probes, and the report."""
