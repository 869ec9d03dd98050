"""The ``local`` target: PostgreSQL, Redis, LocalStack, Prometheus, HAProxy and the services as
supervised processes on loopback (:mod:`.target`), with their specs (:mod:`.components`), the
process supervisor (:mod:`.supervisor`) and HAProxy's configuration and admin socket
(:mod:`.haproxy`)."""
