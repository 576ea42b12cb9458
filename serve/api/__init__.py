"""The Chorus HTTP API: `app.py` builds it from the routers, `deployment.py` runs it on Ray Serve."""
