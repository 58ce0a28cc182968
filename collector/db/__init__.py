"""Database access: the pool, migrations, named queries and one repository per concern."""
