"""`make rehearse-scale`: Kubernetes' scale-out, rehearsed on loopback.

Several tritonserver replicas of one model repository behind HAProxy (HTTP
and gRPC), driven by locust with every response checked against the
ensemble's contract. Mid-run one replica is killed (SIGKILL, as an OOM kill
or a node loss would) and restarted; then every replica is restarted in
turn the way a rolling update does it: taken out of the balancer (the pod
leaving the Service's endpoints, covered by the preStop sleep), SIGTERM
(Triton finishes in-flight requests), started, back in once ready.

    python -m perf.scale --model-repository model_repository
"""
