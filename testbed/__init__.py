"""twisted-testbed: fake SMTP, POP3, IMAP, FTP, HTTP and DNS servers with seeded fault injection."""
