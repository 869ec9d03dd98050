"""The Kubernetes targets (``kind``, ``kubeconfig``): the target (:mod:`.target`), the API client
and its one error conversion (:mod:`.client`), the Argo Rollouts driver (:mod:`.rollouts`) and
the Argo CD GitOps path (:mod:`.argocd`)."""
