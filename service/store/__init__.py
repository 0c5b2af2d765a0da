"""The order store and event inbox: one relational database (SQLite or PostgreSQL)."""
