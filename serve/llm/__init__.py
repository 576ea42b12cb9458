"""The local model tier on Ray Serve, shaped like Ray Serve LLM: an engine contract (`engine.py`),
engines behind it (`engines/`), OpenAI wire models (`protocol.py`), the deployment that is handed
an engine (`server.py`) and the builder from settings to a Serve application (`builder.py`)."""
