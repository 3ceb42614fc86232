"""Built-in plugin `soap`: JSON clients to a SOAP upstream."""
