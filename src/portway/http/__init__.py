"""HTTP/1.1 framing on llhttp (httptools): headers, messages, server and client protocols."""
