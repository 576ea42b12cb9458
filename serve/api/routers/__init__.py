"""One APIRouter per resource of the HTTP API; `serve/api/app.py` includes them all."""
