"""Creating clusters for the Kubernetes targets: kind (:mod:`.kind`)."""
