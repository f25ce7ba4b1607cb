"""The app factory: it takes the service core (or builds one from a configuration) and adds
the HTTP intakes. It starts no thread: workers start from the server's process hooks."""

from __future__ import annotations

import logging

from flask import Flask

from gateway.config import ServiceConfig
from gateway.intake.http import (
    admin,
    broker,
    dicomweb,
    exports,
    fhir,
    ops,
    preview,
    returns,
)
from gateway.intake.http.context import EXTENSION
from gateway.intake.http.errors import register_error_handlers
from gateway.service import Gateway, build_gateway
from gateway.workbench.views import blueprint as workbench


def create_app(core: Gateway | ServiceConfig | None = None) -> Flask:
    gw = core if isinstance(core, Gateway) else build_gateway(core)
    app = Flask("deid_gateway", static_folder=None)  # no route the role table does not list
    app.config["MAX_CONTENT_LENGTH"] = gw.config.limits.max_request_bytes
    app.extensions[EXTENSION] = gw
    for blueprint in (
        ops.blueprint,
        dicomweb.blueprint,
        fhir.blueprint,
        preview.blueprint,
        admin.blueprint,
        exports.blueprint,
        workbench,
        broker.blueprint,
        returns.blueprint,
    ):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return app
