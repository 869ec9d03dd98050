"""Creating clusters for the Kubernetes targets: kind (:mod:`.kind`, needs Docker) and a
single-node Kubernetes built from Debian packages (:mod:`.debian`, no Docker)."""
