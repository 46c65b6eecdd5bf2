"""The operator: node and module reconcilers, Build submission, Module status and Events,
wired onto the controller runtime in kmm_dtk.kube."""
