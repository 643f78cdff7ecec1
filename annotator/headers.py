"""A Content-Security-Policy for every response that does not bring its own.

Pages with a policy of their own keep it: the task pages (``frame-ancestors`` from
TOOLS_FRAME_ANCESTORS, scripts only from our origin) and the marketplace's sandboxed
HTMLQuestion content. Every other page gets a policy that fits all of them, the admin and the
Swagger UI included: no plugins, no ``<base>`` from elsewhere, forms post only to this site, and
framing as X-Frame-Options already says (DENY -> ``'none'``, SAMEORIGIN -> ``'self'``). Files
people uploaded (under MEDIA_URL) are sandboxed and may load nothing, so a polyglot image opened
directly in the browser cannot run as a page of this site.
"""
from __future__ import annotations

from django.conf import settings

HEADER = "Content-Security-Policy"
_FRAMING = {"DENY": "'none'", "SAMEORIGIN": "'self'"}


def page_policy(x_frame_options: str | None) -> str:
    directives = ["object-src 'none'", "base-uri 'self'", "form-action 'self'"]
    framing = _FRAMING.get((x_frame_options or "").upper())
    if framing:
        directives.append(f"frame-ancestors {framing}")
    return "; ".join(directives)


MEDIA_POLICY = "default-src 'none'; img-src 'self'; sandbox"


class DefaultContentSecurityPolicyMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if HEADER in response:
            return response
        media = settings.MEDIA_URL
        if media.startswith("/") and media != "/" and request.path.startswith(media):
            response[HEADER] = MEDIA_POLICY
        else:
            response[HEADER] = page_policy(response.get("X-Frame-Options"))
        return response
