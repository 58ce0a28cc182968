"""The engine's jobs: collect (the batch), reconcile (in-doubt and orphaned attempts)."""
