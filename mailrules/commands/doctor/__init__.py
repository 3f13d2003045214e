"""`mailrules doctor`: checks.py runs the probes (net.py, imap.py, smtp.py) into report.py's rows."""
