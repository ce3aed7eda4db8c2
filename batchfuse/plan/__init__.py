"""Planning: the manifest, catalogs, templates and the planner that turns them into items."""
