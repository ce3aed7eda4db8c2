"""The store: engine, schema, queries and reads of the job database; the only SQL."""
