"""Review: status, export and the static report of a job."""
