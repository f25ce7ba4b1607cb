"""The role table: every route the service answers and who may call it, as data.

The views declare the same roles with :func:`gateway.intake.http.auth.require`; a test checks
that the app's routes, this table and the OpenAPI description (``x-roles``) are one list, so no
route exists (Flask's static route included) that the table does not name. ``None``: open,
no token (health, readiness, the OpenAPI description). Admin may call every tokened route
but those in ``ADMIN_EXCLUDED``.
"""

from __future__ import annotations

from gateway.persistence.tokens import Role

S, P, H, A = Role.SENDER, Role.PRIVACY_OFFICER, Role.HONEST_BROKER, Role.ADMIN
R = Role.PARTNER

#: (method, path in OpenAPI form) -> roles allowed (admin implied), or None when open
ROUTES: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/metrics"): frozenset({A, P}),
    ("POST", "/dicomweb/studies"): frozenset({S}),
    ("POST", "/dicomweb/studies/{study}"): frozenset({S}),
    ("POST", "/d/{destination}/dicomweb/studies"): frozenset({S}),
    ("POST", "/d/{destination}/dicomweb/studies/{study}"): frozenset({S}),
    ("POST", "/fhir"): frozenset({S}),
    ("POST", "/d/{destination}/fhir"): frozenset({S}),
    ("POST", "/fhir/{type}"): frozenset({S}),
    ("PUT", "/fhir/{type}/{id}"): frozenset({S}),
    ("POST", "/d/{destination}/fhir/{type}"): frozenset({S}),
    ("PUT", "/d/{destination}/fhir/{type}/{id}"): frozenset({S}),
    ("POST", "/deidentify/dicom"): frozenset({S, P}),
    ("POST", "/deidentify/fhir"): frozenset({S, P}),
    ("GET", "/jobs/{job_id}"): frozenset({S, P}),
    ("GET", "/quarantine"): frozenset({P}),
    ("GET", "/quarantine/{item_id}"): frozenset({P}),
    ("POST", "/quarantine/{item_id}/release"): frozenset({P}),
    ("POST", "/quarantine/{item_id}/discard"): frozenset({P}),
    ("GET", "/audit"): frozenset({P, H}),
    ("POST", "/broker/lookup"): frozenset({H}),
    ("POST", "/broker/export"): frozenset({H}),
    ("POST", "/d/{destination}/return/dicomweb/studies"): frozenset({R}),
    ("POST", "/d/{destination}/return/fhir"): frozenset({R}),
    ("POST", "/exports"): frozenset({P}),
    ("GET", "/exports/{export_id}"): frozenset({P}),
}

#: routes admin may NOT call: re-identification is the honest broker's alone
ADMIN_EXCLUDED = frozenset({("POST", "/broker/lookup"), ("POST", "/broker/export")})

#: who sees every job, not only the jobs their own token sent
SEE_ALL_JOBS = frozenset({P, A})

#: The workbench's pages (``gateway.workbench``): signed in by a session cookie, not a bearer
#: token, so they are not in the OpenAPI description. ``None``: open (the sign-in form and
#: the vendored stylesheet and script). Admin is implied, as above.
PAGES: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/workbench/signin"): None,
    ("POST", "/workbench/signin"): None,
    ("GET", "/workbench/static/{name}"): None,
    ("POST", "/workbench/signout"): frozenset({P}),
    ("GET", "/workbench/"): frozenset({P}),
    ("GET", "/workbench/profiles"): frozenset({P}),
    ("GET", "/workbench/profiles/{destination}"): frozenset({P}),
    ("GET", "/workbench/profiles/{destination}/edit"): frozenset({P}),
    ("POST", "/workbench/profiles/{destination}/edit"): frozenset({P}),
    ("POST", "/workbench/profiles/{destination}/check"): frozenset({P}),
    ("GET", "/workbench/profiles/{destination}/versions"): frozenset({P}),
    ("POST", "/workbench/profiles/{destination}/signoff"): frozenset({P}),
    ("GET", "/workbench/versions/{hash}.yaml"): frozenset({P}),
    ("GET", "/workbench/diff"): frozenset({P}),
    ("GET", "/workbench/preview"): frozenset({P}),
    ("POST", "/workbench/preview"): frozenset({P}),
    ("GET", "/workbench/quarantine"): frozenset({P}),
    ("GET", "/workbench/quarantine/{item}"): frozenset({P}),
    ("POST", "/workbench/quarantine/{item}/release"): frozenset({P}),
    ("POST", "/workbench/quarantine/{item}/discard"): frozenset({P}),
    ("GET", "/workbench/identity"): frozenset({P}),
    ("POST", "/workbench/identity/mapping"): frozenset({P}),
}
