"""The HTTP API as a Ray Serve application: the ingress deployment and its builders.

`build_api_app` is the import path a Serve config names (``serve.api.deployment:build_api_app``,
see ray-cluster.yaml); `api_app` is what `chorus up` deploys. Both wrap the app `create_app`
builds, so the benchmark can serve the very same handlers with bare uvicorn.
"""

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from chorus.settings import ApiSettings, Settings, load_settings
from serve.api.app import create_app


class ChorusAPI:
    """The API as a Serve ingress; the app is built in the replica, over its own Redis client."""

    def __init__(self, settings: Settings) -> None:
        self._app = create_app(settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app


# Decorators applied by call: `serve.ingress` is untyped, and applied with `@` it would hide the
# Deployment type (and its `.options`) from the type checker.
ChorusAPIDeployment = serve.deployment(name="ChorusAPI")(serve.ingress()(ChorusAPI))


def api_deployment_options(api: ApiSettings) -> dict[str, Any]:
    return {
        "num_replicas": api.replicas,
        "max_ongoing_requests": api.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": api.num_cpus},
    }


def api_app(settings: Settings) -> Application:
    return ChorusAPIDeployment.options(**api_deployment_options(settings.api)).bind(settings)


def build_api_app(args: dict[str, Any]) -> Application:
    """Serve application builder (``serve.api.deployment:build_api_app``).

    ``args`` override fields of the API settings, e.g. ``{"replicas": 2}``; everything else comes
    from the environment (CHORUS_* variables).
    """
    settings = load_settings()
    if args:
        api = ApiSettings.model_validate({**settings.api.model_dump(), **args})
        settings = settings.model_copy(update={"api": api})
    return api_app(settings)
