"""Business rules of the master. Services never touch ``request``; they raise common.errors."""
