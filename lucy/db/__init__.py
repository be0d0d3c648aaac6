"""PostgreSQL: pool, migrations and the embedded development server."""
