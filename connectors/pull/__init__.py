"""Pull connectors: pollers of HTTP APIs, dropped files and SQL tables, with durable cursors."""
