"""OpenAPI post-processing: the error answers every authenticated operation may give.

Each app documents its own success answers and, where it wants, its errors in detail
(``leads.api.errors.responses``). This hook adds what an operation left out, so the
schema says the truth for every operation: a 400 for a wrong body or query, 401 without
a token or session, 403 for a role that may not, 404 for an id that does not exist, 409
for a conflict with the object's state. Public form submissions document their own.
"""

ERROR_BODY = {
    "description": "An error: `{\"errors\": {field: [message, ...]}}` for invalid input, "
                   "`{\"detail\": message}` otherwise.",
    "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
}
DESCRIPTIONS = {
    "400": "Invalid input: each wrong field and why.",
    "401": "No valid token or session.",
    "403": "Your role may not do this.",
    "404": "Not found.",
    "409": "Conflicts with the object's state (e.g. a ruleset that is not a draft).",
}
WRITES = {"post", "put", "patch", "delete"}


def add_error_responses(result, generator, request, public):
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/") or path.endswith("/submissions/"):
            continue
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            codes = ["400", "401", "403", "404"]  # 404: an id in the path, or a lookup by email, not found
            if method in WRITES:
                codes.append("409")
            for code in codes:
                responses.setdefault(code, {**ERROR_BODY, "description": DESCRIPTIONS[code]})
    return result
