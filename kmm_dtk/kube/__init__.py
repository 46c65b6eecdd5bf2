"""Kubernetes machinery with no DTK knowledge: raw client, informers, caches, work queue,
leader election. Modelled on client-go's tools/cache, util/workqueue and tools/leaderelection."""
