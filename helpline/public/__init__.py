"""The public pages: the service's other door, beside the phone line. No log-in.

Who the service is for, what help there is, how confidentiality works, the opening hours and the
number, self-help (from `self_help.yaml`, which anyone may edit), and the self-referral and call-back
request form (forms.py) that joins the same line as phone callers. Built on the NHS design system
(nhsuk-frontend, vendored by scripts/vendor); every page works without JavaScript, and every page
carries the emergency advice. The same pages install as an app (manifest and service worker).
"""

from __future__ import annotations

from flask import Flask

from .. import mail
from . import forms, pages
from .pages import SelfHelpError, load_self_help

__all__ = ["SelfHelpError", "init_app", "load_self_help"]


def init_app(app: Flask) -> None:
    """Register the public pages and the form; check the mail settings and the self-help file now
    rather than on a visit."""
    mail.check_configuration()
    app.extensions["helpline.self_help"] = load_self_help()
    forms.add_to(pages.bp)
    app.register_blueprint(pages.bp)
    app.register_error_handler(404, pages.not_found)
