"""`make demo`: an embedded IMAP server (pymap), sample mail and the starter rules."""
