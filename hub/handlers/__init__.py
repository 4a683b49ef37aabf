"""HTML pages and the handler base class shared with the REST API."""
