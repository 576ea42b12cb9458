"""Running Chorus on a machine: the local stack `chorus up` starts, the Serve deployments, Prometheus.

Above `serve/` in the layer rule (CONTRIBUTING.md): these modules start processes and deploy the
Serve applications; the core (`chorus/`) never imports them.
"""
