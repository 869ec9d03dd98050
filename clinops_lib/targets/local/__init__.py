"""The ``local`` target: PostgreSQL, Redis, LocalStack, Prometheus, HAProxy and the services as
supervised processes on loopback (:mod:`.target`), with their specs (:mod:`.components`), the
process supervisor (:mod:`.supervisor`), HAProxy's configuration and admin socket
(:mod:`.haproxy`) and what it remembers between processes, typed and versioned (:mod:`.state`)."""
