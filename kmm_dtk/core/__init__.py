"""The decision core: pure functions and data over Kubernetes objects as plain dicts.

Nothing here performs I/O or imports a Kubernetes client, so the offline planner and the live
operator call exactly the same code and can never disagree.
"""
