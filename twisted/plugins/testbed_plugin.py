from twisted.application.service import ServiceMaker

testbed = ServiceMaker("twisted-testbed", "testbed.tap", "Fake SMTP, POP3, IMAP, FTP, HTTP and DNS servers with seeded faults", "testbed")
